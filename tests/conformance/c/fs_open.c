/* open-at: flags and their errors (create, exclusive, truncate, directory, access modes). */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    char buf[128];
    expect_open("open file.txt O_RDONLY", "file.txt", O_RDONLY, 0);
    expect_open("open /file.txt (absolute, inside the preopen)", "/file.txt", O_RDONLY, 0);
    expect_open("open missing", "missing", O_RDONLY, ENOENT);
    /* wasi-libc resolves "" against the current directory: Linux says ENOENT */
    expect_open("open empty path", "", O_RDONLY, 0);
    expect_open("open missing/child", "missing/child", O_RDONLY, ENOENT);
    expect_open("open file.txt/child", "file.txt/child", O_RDONLY, ENOTDIR);
    expect_open("open O_CREAT new", "new.txt", O_CREAT | O_WRONLY, 0);
    expect_open("open O_CREAT existing", "new.txt", O_CREAT | O_WRONLY, 0);
    expect_open("open O_CREAT|O_EXCL existing", "new.txt", O_CREAT | O_EXCL | O_WRONLY, EEXIST);
    expect_open("open O_CREAT|O_EXCL new", "excl.txt", O_CREAT | O_EXCL | O_WRONLY, 0);
    expect_open("open O_CREAT in missing dir", "missing/new", O_CREAT | O_WRONLY, ENOENT);
    expect_open("open O_CREAT|O_EXCL on a directory", "dir", O_CREAT | O_EXCL | O_WRONLY, EEXIST);
    expect_open("open O_DIRECTORY on a file", "file.txt", O_RDONLY | O_DIRECTORY, ENOTDIR);
    expect_open("open O_DIRECTORY on a directory", "dir", O_RDONLY | O_DIRECTORY, 0);
    expect_open("open a directory O_RDONLY", "dir", O_RDONLY, 0);
    expect_open("open a directory O_WRONLY", "dir", O_WRONLY, EISDIR);
    expect_open("open a directory O_RDWR", "dir", O_RDWR, EISDIR);
    expect_open("open a directory O_CREAT", "dir", O_CREAT | O_RDONLY, EISDIR);
    expect_open("open a directory O_TRUNC", "dir", O_TRUNC | O_WRONLY, EISDIR);
    expect_open("open . O_RDONLY", ".", O_RDONLY, 0);
    expect_open("open / O_RDONLY", "/", O_RDONLY, 0);

    /* O_TRUNC empties; O_RDONLY forbids writes; O_WRONLY forbids reads */
    int fd = open("trunc.txt", O_CREAT | O_WRONLY, 0644);
    expect_int("write 10 bytes", write(fd, "0123456789", 10), 10);
    close(fd);
    expect_open("open O_TRUNC", "trunc.txt", O_TRUNC | O_WRONLY, 0);
    struct stat st;
    expect("stat trunc.txt", stat("trunc.txt", &st), 0);
    expect_int("size after O_TRUNC", st.st_size, 0);

    fd = open("file.txt", O_RDONLY);
    expect("write to O_RDONLY", write(fd, "x", 1), EBADF);
    expect_int("read from O_RDONLY", read(fd, buf, 5), 5);
    close(fd);
    fd = open("new.txt", O_WRONLY);
    expect("read from O_WRONLY", read(fd, buf, 1), EBADF);
    close(fd);
    fd = open("file.txt", O_RDWR);
    expect_int("read from O_RDWR", read(fd, buf, 5), 5);
    expect_int("write to O_RDWR", write(fd, "X", 1), 1);
    close(fd);
    expect_str("file.txt after writing at offset 5", slurp("file.txt", buf, sizeof buf), "helloX world\n");

    /* a closed descriptor */
    fd = open("file.txt", O_RDONLY);
    close(fd);
    expect("read a closed fd", read(fd, buf, 1), EBADF);
    expect("close a closed fd", close(fd), EBADF);

    /* a long name */
    char longname[300];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    expect_open("open a 299-byte name", longname, O_CREAT | O_WRONLY, ENAMETOOLONG);
    return done();
}
