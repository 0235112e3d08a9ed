/* Trailing slashes: a path ending in "/" names a directory, or nothing. */
#include "check.h"
#include <sys/stat.h>

int main(void) {
    struct stat st;
    expect_open("open file.txt/", "file.txt/", O_RDONLY, ENOTDIR);
    expect_open("open dir/nested/file/", "dir/nested/file/", O_RDONLY, ENOTDIR);
    expect_open("open dir/", "dir/", O_RDONLY, 0);
    expect_open("open dir//", "dir//", O_RDONLY, 0);
    expect_open("open O_CREAT new/", "new/", O_CREAT | O_WRONLY, EISDIR);
    expect("stat file.txt/", stat("file.txt/", &st), ENOTDIR);
    expect("stat dir/", stat("dir/", &st), 0);
    expect("stat link-dir/ (follows)", stat("link-dir/", &st), 0);
    expect_true("link-dir/ is a directory", S_ISDIR(st.st_mode));
    expect("lstat link-file/", lstat("link-file/", &st), ENOTDIR);
    expect("mkdir made/", mkdir("made/", 0755), 0);
    expect("rmdir made/ (Linux removes it)", rmdir("made/"), EINVAL);
    expect("rmdir made", rmdir("made"), 0);
    expect("unlink file.txt/", unlink("file.txt/"), ENOTDIR);
    expect("unlink dir/", unlink("dir/"), EISDIR);
    expect("rmdir file.txt/", rmdir("file.txt/"), ENOTDIR);
    expect("symlink to target/", symlink("target/", "sl"), 0);
    expect("unlink sl", unlink("sl"), 0);
    expect("symlink at name/", symlink("file.txt", "sl/"), ENOENT);
    expect("link file.txt to hard/", link("file.txt", "hard/"), ENOENT);
    expect("link file.txt/ to hard", link("file.txt/", "hard"), ENOTDIR);
    expect("rename file.txt to renamed/", rename("file.txt", "renamed/"), ENOTDIR);
    expect("rename file.txt/ to renamed", rename("file.txt/", "renamed"), ENOTDIR);
    expect("link through out-secret/", link("out-secret/", "stolen"), EPERM);
    expect("mkdir d2", mkdir("d2", 0755), 0);
    expect("rename d2/ to d3/", rename("d2/", "d3/"), 0);
    expect("stat d3", stat("d3", &st), 0);
    expect_true("file.txt untouched", stat("file.txt", &st) == 0 && S_ISREG(st.st_mode));
    return done();
}
