/* Sandbox escapes: every path trick the corpus knows, each of which must be refused, and
 * nothing outside the preopen may be read, created, changed or removed. */
#include "check.h"
#include <stdlib.h>
#include <sys/stat.h>

static void refused(const char *label, long rc) {
    int got = rc < 0 ? errno : 0;
    checks++;
    printf("%s: %s\n", label, errname(got));
    if (got == 0) fail(label, "escaped the preopen");
}

static void refused_open(const char *label, const char *path, int flags) {
    char buf[128];
    int fd = open(path, flags, 0644);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        printf("%s: read \"%s\"\n", label, buf);
        close(fd);
        errno = 0;
    }
    refused(label, fd);
}

int main(void) {
    struct stat st;
    char buf[64];
    const char *outside[] = {
        "..", "../secret/secret.txt", "/../secret/secret.txt", "dir/../../secret/secret.txt",
        "dir/nested/../../../secret/secret.txt", "./../secret/secret.txt",
        "out/secret/secret.txt", "out-secret", "link-dir/../../secret/secret.txt",
        "abs", "/etc/passwd/../../secret/secret.txt", "out/root/../secret/secret.txt",
    };
    for (size_t i = 0; i < sizeof outside / sizeof *outside; i++) {
        char label[128];
        snprintf(label, sizeof label, "open %s", outside[i]);
        refused_open(label, outside[i], O_RDONLY);
        snprintf(label, sizeof label, "stat %s", outside[i]);
        refused(label, stat(outside[i], &st));
    }
    refused_open("create ../created", "../created", O_CREAT | O_WRONLY);
    refused_open("create out/created", "out/created", O_CREAT | O_WRONLY);
    refused_open("truncate out-secret", "out-secret", O_WRONLY | O_TRUNC);
    refused("mkdir ../made", mkdir("../made", 0755));
    refused("mkdir out/made", mkdir("out/made", 0755));
    refused("unlink ../secret/secret.txt", unlink("../secret/secret.txt"));
    refused("unlink out/secret/secret.txt", unlink("out/secret/secret.txt"));
    refused("rmdir ../secret", rmdir("../secret"));
    refused("rename ../secret/secret.txt in", rename("../secret/secret.txt", "stolen"));
    refused("rename file.txt out", rename("file.txt", "../secret/planted"));
    refused("rename into out/", rename("file.txt", "out/secret/planted"));
    refused("link ../secret/secret.txt in", link("../secret/secret.txt", "stolen"));
    refused("link file.txt out", link("file.txt", "../secret/planted"));
    refused("symlink placed outside", symlink("file.txt", "../secret/planted"));
    refused("symlink with an absolute target", symlink("/etc/passwd", "new-abs"));
    refused("utimensat ../secret/secret.txt", utimensat(AT_FDCWD, "../secret/secret.txt", NULL, 0));
    refused("utimensat out-secret", utimensat(AT_FDCWD, "out-secret", NULL, 0));
    refused("truncate out-secret", truncate("out-secret", 0));
    refused("readlink ../secret", readlink("../secret", buf, sizeof buf));
    refused("chdir ..", chdir(".."));
    refused("chdir out", chdir("out"));
    /* symlinks created inside that point out are created, but never followed out */
    expect("symlink esc -> ../secret", symlink("../secret", "esc"), 0);
    refused_open("open esc/secret.txt", "esc/secret.txt", O_RDONLY);
    expect("symlink esc2 -> dir/../..", symlink("dir/../..", "esc2"), 0);
    refused_open("open esc2/secret/secret.txt", "esc2/secret/secret.txt", O_RDONLY);
    expect("mkdir d, symlink d/up -> ../..", mkdir("d", 0755) == 0 ? symlink("../..", "d/up") : -1, 0);
    refused_open("open d/up/secret/secret.txt", "d/up/secret/secret.txt", O_RDONLY);
    refused("rename d/up/secret/secret.txt in", rename("d/up/secret/secret.txt", "stolen3"));
    /* a directory fd opened inside cannot be used to climb out either */
    int dir = open("dir", O_RDONLY | O_DIRECTORY);
    int fd = openat(dir, "../../secret/secret.txt", O_RDONLY);
    refused("openat dir ../../secret/secret.txt", fd);
    if (fd >= 0) close(fd);
    close(dir);
    return done();
}
