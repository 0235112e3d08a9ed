/* "." and "..": inside the preopen they resolve as on Linux; above it they are refused. */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    char buf[64];
    struct stat st;
    expect_str("read ./file.txt", slurp("./file.txt", buf, sizeof buf), "hello, world\n");
    expect_str("read dir/../file.txt", slurp("dir/../file.txt", buf, sizeof buf), "hello, world\n");
    expect_str("read dir/nested/../../file.txt", slurp("dir/nested/../../file.txt", buf, sizeof buf), "hello, world\n");
    expect_str("read dir/./nested/./file", slurp("dir/./nested/./file", buf, sizeof buf), "nested\n");
    expect_str("read /./dir/nested/file", slurp("/./dir/nested/file", buf, sizeof buf), "nested\n");
    expect("stat .", stat(".", &st), 0);
    expect("stat dir/..", stat("dir/..", &st), 0);
    expect("stat ..", stat("..", &st), EPERM);
    expect("stat dir/../..", stat("dir/../..", &st), EPERM);
    expect_open("open ../secret/secret.txt", "../secret/secret.txt", O_RDONLY, EPERM);
    expect_open("open dir/../../secret/secret.txt", "dir/../../secret/secret.txt", O_RDONLY, EPERM);
    expect_open("open missing/../file.txt", "missing/../file.txt", O_RDONLY, ENOENT);
    expect_open("open file.txt/../file.txt", "file.txt/../file.txt", O_RDONLY, ENOTDIR);
    expect("mkdir .", mkdir(".", 0755), EEXIST);
    expect("mkdir dir/..", mkdir("dir/..", 0755), EEXIST);
    expect("mkdir ..", mkdir("..", 0755), EPERM);
    expect("rmdir .", rmdir("."), EINVAL);
    expect("rmdir dir/empty/.", rmdir("dir/empty/."), EINVAL);
    expect("rmdir dir/.. (Linux says ENOTEMPTY)", rmdir("dir/.."), EINVAL);
    expect("unlink .", unlink("."), EISDIR);
    expect("rename . to x", rename(".", "x"), EBUSY);
    expect("rename dir/empty to dir/.. (Linux says ENOTEMPTY)", rename("dir/empty", "dir/.."), EBUSY);
    expect("chdir dir", chdir("dir"), 0);
    expect_str("read nested/file after chdir", slurp("nested/file", buf, sizeof buf), "nested\n");
    expect_str("read ../file.txt after chdir", slurp("../file.txt", buf, sizeof buf), "hello, world\n");
    expect_open("open ../../secret/secret.txt after chdir", "../../secret/secret.txt", O_RDONLY, EPERM);
    return done();
}
