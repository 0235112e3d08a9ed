/* rename-at, unlink-file-at, remove-directory-at, create-directory-at and their errors. */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    char buf[64];
    struct stat st;
    expect("mkdir a", mkdir("a", 0755), 0);
    expect("mkdir a again", mkdir("a", 0755), EEXIST);
    expect("mkdir over a file", mkdir("file.txt", 0755), EEXIST);
    expect("mkdir in a missing dir", mkdir("missing/a", 0755), ENOENT);
    expect("mkdir under a file", mkdir("file.txt/a", 0755), ENOTDIR);
    expect("mkdir a/b", mkdir("a/b", 0755), 0);
    expect("stat a", stat("a", &st), 0);
    printf("new dir mode: %o\n", st.st_mode & 0777);

    int fd = open("f1", O_CREAT | O_WRONLY, 0644);
    expect_int("write f1", write(fd, "first", 5), 5);
    close(fd);
    fd = open("f2", O_CREAT | O_WRONLY, 0644);
    expect_int("write f2", write(fd, "second", 6), 6);
    close(fd);
    expect("rename f1 over f2", rename("f1", "f2"), 0);
    expect_str("f2 holds f1's bytes", slurp("f2", buf, sizeof buf), "first");
    expect("stat f1", stat("f1", &st), ENOENT);
    expect("rename f2 to itself", rename("f2", "f2"), 0);
    expect("rename missing", rename("missing", "x"), ENOENT);
    expect("rename into a missing dir", rename("f2", "missing/x"), ENOENT);
    expect("rename a file over a dir", rename("f2", "a"), EISDIR);
    expect("rename a dir over a file", rename("a", "f2"), ENOTDIR);
    expect("mkdir e", mkdir("e", 0755), 0);
    expect("rename a dir over an empty dir", rename("e", "dir/empty"), 0);
    expect("rename a dir over a non-empty dir", rename("a", "dir"), ENOTEMPTY);
    expect("rename a dir into itself", rename("a", "a/b/c"), EINVAL);
    expect("rename f2 to a/b/f2", rename("f2", "a/b/f2"), 0);
    expect("rename a to moved", rename("a", "moved"), 0);
    expect_str("moved/b/f2", slurp("moved/b/f2", buf, sizeof buf), "first");
    expect("rename a symlink over a file", rename("link-file", "moved/b/f2"), 0);
    expect("lstat moved/b/f2", lstat("moved/b/f2", &st), 0);
    expect_true("it is the symlink now", S_ISLNK(st.st_mode));

    expect("unlink a dir", unlink("moved"), EISDIR);
    expect("unlink missing", unlink("missing"), ENOENT);
    expect("unlink in a missing dir", unlink("missing/x"), ENOENT);
    expect("rmdir a file", rmdir("empty.txt"), ENOTDIR);
    expect("rmdir missing", rmdir("missing"), ENOENT);
    expect("rmdir a non-empty dir", rmdir("moved"), ENOTEMPTY);
    expect("unlink moved/b/f2", unlink("moved/b/f2"), 0);
    expect("rmdir moved/b", rmdir("moved/b"), 0);
    expect("rmdir moved", rmdir("moved"), 0);
    expect("rmdir / (Linux says EBUSY)", rmdir("/"), EINVAL);
    expect("unlink dangling", unlink("dangling"), 0);
    expect("unlink loop", unlink("loop"), 0);
    fd = open("dir/nested/file", O_RDONLY);
    expect("unlink an open file", unlink("dir/nested/file"), 0);
    expect_int("read it still", read(fd, buf, 7), 7);
    close(fd);
    expect("rmdir dir/nested", rmdir("dir/nested"), 0);
    return done();
}
