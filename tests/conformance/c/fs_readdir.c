/* read-directory: every entry of a big directory once, with its type and inode; "." and
 * ".." as the adapter adds them; rewinding; entries of the fixture's root. */
#include "check.h"
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#define N 1500

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    char name[64];
    expect("mkdir big", mkdir("big", 0755), 0);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "big/entry-%04d-%s", i, i % 3 ? "file" : "with a longer name to spill buffers");
        int fd = open(name, O_CREAT | O_WRONLY, 0644);
        if (fd < 0) { expect(name, fd, 0); break; }
        close(fd);
    }
    expect("mkdir big/subdir", mkdir("big/subdir", 0755), 0);
    expect("symlink big/link", symlink("subdir", "big/link"), 0);

    DIR *d = opendir("big");
    expect_true("opendir big", d != NULL);
    int count = 0, dots = 0, files = 0, dirs = 0, links = 0, ino_ok = 1;
    unsigned long sum = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) { dots++; continue; }
        count++;
        for (const char *p = e->d_name; *p; p++) sum = sum * 31 + (unsigned char)*p;
        if (e->d_type == DT_REG) files++;
        if (e->d_type == DT_DIR) dirs++;
        if (e->d_type == DT_LNK) links++;
        char path[128];
        snprintf(path, sizeof path, "big/%s", e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || st.st_ino != e->d_ino) ino_ok = 0;
    }
    expect("readdir ends without error", errno ? -1 : 0, 0);
    expect_int("entries", count, N + 2);
    expect_int(". and .. entries", dots, 2);
    expect_int("regular files", files, N);
    expect_int("directories", dirs, 1);
    expect_int("symlinks", links, 1);
    printf("order-independent name sum: %lu\n", sum % 1000003);
    expect_true("each entry's d_ino is its lstat st_ino", ino_ok);
    rewinddir(d);
    int again = 0;
    while ((e = readdir(d)) != NULL) again++;
    expect_int("entries after rewinddir", again, N + 4);
    closedir(d);

    struct dirent **list;
    int n = scandir(".", &list, NULL, alphasort);
    expect_true("scandir .", n > 0);
    for (int i = 0; i < n; i++) {
        printf("root entry: %s type %d\n", list[i]->d_name, list[i]->d_type);
        free(list[i]);
    }
    free(list);
    n = scandir("dir/empty", &list, NULL, alphasort);
    expect_int("entries of an empty dir", n, 2);
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
    expect_true("opendir a file", opendir("file.txt") == NULL);
    expect("errno", -1, ENOTDIR);
    expect_true("opendir missing", opendir("missing") == NULL);
    expect("errno", -1, ENOENT);

    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "big/entry-%04d-%s", i, i % 3 ? "file" : "with a longer name to spill buffers");
        if (unlink(name) != 0) { expect(name, -1, 0); break; }
    }
    expect("rmdir big (not empty yet)", rmdir("big"), ENOTEMPTY);
    expect("unlink big/link", unlink("big/link"), 0);
    expect("rmdir big/subdir", rmdir("big/subdir"), 0);
    expect("rmdir big", rmdir("big"), 0);
    (void)cmp;
    return done();
}
