/* Self-checks shared by the C conformance programs: each check prints what it saw,
 * and a FAIL line when that is not what Linux and wasmtime do. main ends with
 * `return done();` (exit status 1 if anything failed). */
#ifndef CONFORMANCE_CHECK_H
#define CONFORMANCE_CHECK_H
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define HELPER static __attribute__((unused))

static int checks, failures;

/* Line-buffered stdout, so what a program printed before a trap is not lost. */
__attribute__((constructor)) static void line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

HELPER const char *errname(int e) {
    switch (e) {
    case 0: return "ok";
    case EACCES: return "EACCES";
    case EBADF: return "EBADF";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EFBIG: return "EFBIG";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case EISDIR: return "EISDIR";
    case ELOOP: return "ELOOP";
    case EMLINK: return "EMLINK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOENT: return "ENOENT";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENOTCAPABLE: return "ENOTCAPABLE";
    case ENOTDIR: return "ENOTDIR";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ENOTSUP: return "ENOTSUP";
    case ENOTTY: return "ENOTTY";
    case ENXIO: return "ENXIO";
    case EOVERFLOW: return "EOVERFLOW";
    case EPERM: return "EPERM";
    case EPIPE: return "EPIPE";
    case EROFS: return "EROFS";
    case ESPIPE: return "ESPIPE";
    case EXDEV: return "EXDEV";
    case EAGAIN: return "EAGAIN";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno %d", e);
        return buf;
    }
    }
}

HELPER void fail(const char *label, const char *why) {
    printf("FAIL %s: %s\n", label, why);
    failures++;
}

/* rc < 0 means failure with errno; want is 0 for success or the errno expected. */
HELPER int expect(const char *label, long rc, int want) {
    int got = rc < 0 ? errno : 0;
    checks++;
    printf("%s: %s\n", label, errname(got));
    if (got != want) {
        char why[64];
        snprintf(why, sizeof why, "want %s", errname(want));
        fail(label, why);
    }
    return got;
}

/* Like expect, but the result is an errno value (0 for success), as posix_fadvise returns. */
HELPER int expect_code(const char *label, int got, int want) {
    errno = got;
    return expect(label, got ? -1 : 0, want);
}

HELPER void expect_int(const char *label, long long got, long long want) {
    checks++;
    printf("%s: %lld\n", label, got);
    if (got != want) {
        char why[64];
        snprintf(why, sizeof why, "want %lld", want);
        fail(label, why);
    }
}

HELPER void expect_str(const char *label, const char *got, const char *want) {
    checks++;
    printf("%s: \"%s\"\n", label, got ? got : "(null)");
    if (!got || strcmp(got, want) != 0) {
        char why[160];
        snprintf(why, sizeof why, "want \"%s\"", want);
        fail(label, why);
    }
}

HELPER void expect_true(const char *label, int cond) {
    checks++;
    printf("%s: %s\n", label, cond ? "yes" : "no");
    if (!cond) fail(label, "want yes");
}

/* open(path, flags), then close what it opened; the errno (0: opened). */
HELPER int expect_open(const char *label, const char *path, int flags, int want) {
    int fd = open(path, flags, 0644);
    int got = expect(label, fd, want);
    if (fd >= 0) close(fd);
    return got;
}

/* The whole content of path (at most size-1 bytes), or "" with errno set. */
HELPER const char *slurp(const char *path, char *buf, size_t size) {
    buf[0] = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return "";
    ssize_t n = read(fd, buf, size - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    return buf;
}

HELPER int done(void) {
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
#endif
