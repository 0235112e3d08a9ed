/* Symlinks: reading them, following them (to files, to directories, dangling, looping,
 * absolute, leading out of the preopen), creating and removing them. */
#include "check.h"
#include <sys/stat.h>

static void show_readlink(const char *path, const char *want) {
    char buf[128];
    ssize_t n = readlink(path, buf, sizeof buf - 1);
    char label[96];
    snprintf(label, sizeof label, "readlink %s", path);
    if (n < 0) { expect(label, n, 0); return; }
    buf[n] = 0;
    expect_str(label, buf, want);
}

int main(void) {
    char buf[128];
    struct stat st;
    show_readlink("link-file", "file.txt");
    /* wasmtime does not even tell a guest where an absolute symlink points */
    expect("readlink abs", readlink("abs", buf, sizeof buf), EPERM);
    show_readlink("out", "..");
    show_readlink("out-secret", "../secret/secret.txt");
    show_readlink("dangling", "missing");
    expect("readlink a file", readlink("file.txt", buf, sizeof buf), EINVAL);
    expect("readlink missing", readlink("missing", buf, sizeof buf), ENOENT);
    expect_int("readlink into a 3-byte buffer", readlink("link-file", buf, 3), 3);

    expect_str("read through link-file", slurp("link-file", buf, sizeof buf), "hello, world\n");
    expect_str("read through link-dir/nested/file", slurp("link-dir/nested/file", buf, sizeof buf), "nested\n");
    expect_open("open dangling", "dangling", O_RDONLY, ENOENT);
    expect_open("open loop", "loop", O_RDONLY, ELOOP);
    expect_open("open loop-a", "loop-a", O_RDONLY, ELOOP);
    expect_open("open abs (absolute target)", "abs", O_RDONLY, EPERM);
    expect_open("open out-secret", "out-secret", O_RDONLY, EPERM);
    expect_open("open out/secret/secret.txt", "out/secret/secret.txt", O_RDONLY, EPERM);
    expect_open("open link-file O_NOFOLLOW", "link-file", O_RDONLY | O_NOFOLLOW, ELOOP);
    expect_open("open link-dir/nested/file O_NOFOLLOW (only the last part)", "link-dir/nested/file", O_RDONLY | O_NOFOLLOW, 0);
    expect_open("O_CREAT through dangling", "dangling", O_CREAT | O_WRONLY, 0);
    expect_true("dangling's target now exists", lstat("missing", &st) == 0 && S_ISREG(st.st_mode));
    expect_open("O_CREAT|O_EXCL on link-file", "link-file", O_CREAT | O_EXCL | O_WRONLY, EEXIST);

    expect("stat link-file", stat("link-file", &st), 0);
    expect_true("stat follows to a regular file", S_ISREG(st.st_mode));
    expect_int("size through the link", st.st_size, 13);
    expect("lstat link-file", lstat("link-file", &st), 0);
    expect_true("lstat sees a symlink", S_ISLNK(st.st_mode));
    expect_int("lstat size is the target's length", st.st_size, 8);
    expect("stat loop", stat("loop", &st), ELOOP);
    expect("lstat loop", lstat("loop", &st), 0);
    expect("stat abs", stat("abs", &st), EPERM);
    expect("lstat abs", lstat("abs", &st), 0);
    expect("stat out", stat("out", &st), EPERM);

    expect("symlink new -> file.txt", symlink("file.txt", "new-link"), 0);
    expect_str("read through new-link", slurp("new-link", buf, sizeof buf), "hello, world\n");
    expect("symlink over existing", symlink("file.txt", "new-link"), EEXIST);
    expect("symlink with an absolute target", symlink("/file.txt", "abs-link"), EPERM);
    expect("symlink with a target leading out", symlink("../secret/secret.txt", "out-link"), 0);
    expect_open("open out-link", "out-link", O_RDONLY, EPERM);
    expect("symlink in a missing dir", symlink("x", "missing-dir/x"), ENOENT);
    expect("symlink chain a -> new-link", symlink("new-link", "chain"), 0);
    expect_str("read through a chain", slurp("chain", buf, sizeof buf), "hello, world\n");
    expect("unlink a symlink", unlink("new-link"), 0);
    expect_true("its target stays", stat("file.txt", &st) == 0);
    expect_open("open the chain now", "chain", O_RDONLY, ENOENT);
    expect("rmdir link-dir (a symlink)", rmdir("link-dir"), ENOTDIR);
    expect("unlink link-dir (a symlink to a dir)", unlink("link-dir"), 0);
    expect_true("dir stays", stat("dir", &st) == 0 && S_ISDIR(st.st_mode));
    expect("rename a symlink", rename("chain", "chain2"), 0);
    show_readlink("chain2", "new-link");
    expect("mkdir over a dangling link", mkdir("chain2", 0755), EEXIST);
    return done();
}
