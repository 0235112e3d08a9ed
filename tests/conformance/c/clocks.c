/* wasi:clocks: the wall clock is near now, the monotonic clock never goes back, sleeping
 * waits at least as long as asked, resolutions are sane. Prints no time values. */
#include "check.h"
#include <time.h>

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void) {
    struct timespec a, b, res;
    expect("clock_gettime REALTIME", clock_gettime(CLOCK_REALTIME, &a), 0);
    expect_true("wall clock is after 2024", a.tv_sec > 1704067200);
    expect_true("wall clock nanoseconds in range", a.tv_nsec >= 0 && a.tv_nsec < 1000000000);
    expect_true("time() agrees", time(NULL) - a.tv_sec <= 1);
    expect("clock_getres REALTIME", clock_getres(CLOCK_REALTIME, &res), 0);
    expect_true("wall resolution within 0..1s", ns(res) > 0 && ns(res) <= 1000000000);
    expect("clock_getres MONOTONIC", clock_getres(CLOCK_MONOTONIC, &res), 0);
    expect_true("monotonic resolution within 0..1ms", ns(res) > 0 && ns(res) <= 1000000);
    expect("clock_gettime MONOTONIC", clock_gettime(CLOCK_MONOTONIC, &a), 0);
    int back = 0;
    for (int i = 0; i < 10000; i++) {
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (ns(b) < ns(a)) back = 1;
        a = b;
    }
    expect_true("monotonic never goes back", !back);
    struct timespec sleep = {0, 20000000};
    clock_gettime(CLOCK_MONOTONIC, &a);
    expect("nanosleep 20ms", nanosleep(&sleep, NULL), 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    expect_true("slept at least 20ms", ns(b) - ns(a) >= 20000000);
    expect_true("slept less than 5s", ns(b) - ns(a) < 5000000000LL);
    clock_gettime(CLOCK_MONOTONIC, &a);
    expect("usleep 0", usleep(0), 0);
    struct timespec bad = {0, 2000000000};
    expect("nanosleep with bad nanoseconds", nanosleep(&bad, NULL), EINVAL);
    return done();
}
