/* stat, fstat and fstatat: types, sizes, link counts, inode (metadata-hash) identity and
 * the descriptor flags; is-same-object through hard links. */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    struct stat a, b, c;
    expect("stat file.txt", stat("file.txt", &a), 0);
    expect_true("file.txt is a regular file", S_ISREG(a.st_mode));
    expect_int("size", a.st_size, 13);
    expect_int("nlink", a.st_nlink, 1);
    expect("stat dir", stat("dir", &b), 0);
    expect_true("dir is a directory", S_ISDIR(b.st_mode));
    expect_true("different files, different inodes", a.st_ino != b.st_ino);
    expect_true("same device", a.st_dev == b.st_dev);
    expect("lstat link-file", lstat("link-file", &c), 0);
    expect_true("link-file is a symlink", S_ISLNK(c.st_mode));
    expect("stat link-file", stat("link-file", &c), 0);
    expect_true("stat through a link: same inode as its target", c.st_ino == a.st_ino);
    int fd = open("file.txt", O_RDONLY);
    expect("fstat", fstat(fd, &c), 0);
    expect_true("fstat: same inode as stat", c.st_ino == a.st_ino);
    expect_true("fstat: same type", S_ISREG(c.st_mode));
    close(fd);

    expect("link file.txt hard", link("file.txt", "hard"), 0);
    expect("stat hard", stat("hard", &c), 0);
    expect_true("a hard link: the same inode", c.st_ino == a.st_ino);
    expect_int("nlink after link", c.st_nlink, 2);
    expect("link over an existing name", link("file.txt", "hard"), EEXIST);
    expect("link a directory", link("dir", "dir-hard"), EPERM);
    expect("link missing", link("missing", "x"), ENOENT);
    expect("link into a missing dir", link("file.txt", "missing/x"), ENOENT);
    expect("link a dangling symlink (not followed)", link("dangling", "dangling-hard"), 0);
    expect("lstat dangling-hard", lstat("dangling-hard", &c), 0);
    expect_true("the hard link is the symlink itself", S_ISLNK(c.st_mode));
    expect("unlink file.txt", unlink("file.txt"), 0);
    expect("stat hard", stat("hard", &c), 0);
    expect_int("nlink after unlinking the other name", c.st_nlink, 1);

    int dir = open("dir", O_RDONLY | O_DIRECTORY);
    expect("fstatat dir nested/file", fstatat(dir, "nested/file", &c, 0), 0);
    expect_int("size", c.st_size, 7);
    expect("fstatat dir missing", fstatat(dir, "missing", &c, 0), ENOENT);
    expect("fstatat dir ''", fstatat(dir, "", &c, 0), ENOENT);
    expect("fstat dir", fstat(dir, &c), 0);
    expect_true("fstat of a directory fd", S_ISDIR(c.st_mode) && c.st_ino == b.st_ino);
    int flags = fcntl(dir, F_GETFL);
    expect_int("dir fd access mode", flags & O_ACCMODE, O_RDONLY);
    close(dir);
    fd = open("hard", O_RDWR);
    expect_int("O_RDWR fd access mode", fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
    expect("fsync", fsync(fd), 0);
    expect("fdatasync", fdatasync(fd), 0);
    expect_code("posix_fadvise sequential", posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL), 0);
    expect_code("posix_fadvise dontneed", posix_fadvise(fd, 0, 13, POSIX_FADV_DONTNEED), 0);
    expect_code("posix_fadvise bad advice", posix_fadvise(fd, 0, 0, 99), EINVAL);
    expect_code("posix_fadvise negative length", posix_fadvise(fd, 0, -1, POSIX_FADV_NORMAL), EINVAL);
    close(fd);
    fd = open("dir", O_RDONLY);
    expect("fsync a directory (the adapter refuses)", fsync(fd), EBADF);
    close(fd);
    fd = open("empty.txt", O_RDONLY);
    expect("fsync a read-only file", fsync(fd), 0);
    close(fd);
    return done();
}
