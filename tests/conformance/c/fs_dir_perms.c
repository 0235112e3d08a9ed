/* A directory opened inside the preopen has the preopen's rights: creating, removing and
 * renaming through it works (openat, mkdirat, unlinkat, renameat, symlinkat, linkat). */
#include "check.h"
#include <dirent.h>
#include <sys/stat.h>

int main(void) {
    char buf[64];
    struct stat st;
    int dir = open("dir", O_RDONLY | O_DIRECTORY);
    expect("open dir", dir, 0);
    expect("mkdirat dir/sub", mkdirat(dir, "sub", 0755), 0);
    int fd = openat(dir, "sub/f", O_CREAT | O_WRONLY, 0644);
    expect("openat O_CREAT dir/sub/f", fd, 0);
    expect_int("write", write(fd, "abc", 3), 3);
    close(fd);
    expect("renameat sub/f -> g", renameat(dir, "sub/f", dir, "g"), 0);
    expect("symlinkat dir/s -> g", symlinkat("g", dir, "s"), 0);
    expect("linkat dir/g -> dir/h", linkat(dir, "g", dir, "h", 0), 0);
    expect("unlinkat dir/h", unlinkat(dir, "h", 0), 0);
    expect("unlinkat dir/sub (AT_REMOVEDIR)", unlinkat(dir, "sub", AT_REMOVEDIR), 0);
    expect("utimensat dir/g", utimensat(dir, "g", NULL, 0), 0);
    expect_str("dir/s reads g", slurp("dir/s", buf, sizeof buf), "abc");

    int dot = open(".", O_RDONLY | O_DIRECTORY);
    expect("open .", dot, 0);
    expect("mkdirat ./made", mkdirat(dot, "made", 0755), 0);
    int made = openat(dot, "made", O_RDONLY | O_DIRECTORY);
    expect("openat made", made, 0);
    expect("mkdirat made/deeper", mkdirat(made, "deeper", 0755), 0);
    int deeper = openat(made, "deeper", O_RDONLY | O_DIRECTORY);
    expect("openat made/deeper", deeper, 0);
    fd = openat(deeper, "leaf", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    expect("create made/deeper/leaf", fd, 0);
    close(fd);
    expect("renameat across opened dirs", renameat(deeper, "leaf", dir, "leaf"), 0);
    expect("unlinkat dir/leaf through ./dir", unlinkat(dot, "dir/leaf", 0), 0);
    expect("unlinkat deeper through made", unlinkat(made, "deeper", AT_REMOVEDIR), 0);
    /* wasmtime: every descriptor is a sandbox of its own, so ".." above it is refused */
    expect("fstatat made/..", fstatat(made, "..", &st, 0), EPERM);
    expect("fstatat made/../.. (out)", fstatat(made, "../..", &st, 0), EPERM);
    expect_open("openat made/../../secret/secret.txt", "made/../../secret/secret.txt", O_RDONLY, EPERM);
    expect("mkdirat made ../../made (out)", mkdirat(made, "../../made", 0755), EPERM);
    expect("unlinkat made ../../secret/secret.txt (out)", unlinkat(made, "../../secret/secret.txt", 0), EPERM);
    close(deeper);
    close(made);
    close(dot);
    close(dir);
    return done();
}
