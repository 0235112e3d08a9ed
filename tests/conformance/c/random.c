/* wasi:random: getentropy fills buffers with bytes that differ between calls and look
 * random enough (no value prints). */
#include "check.h"
#include <stdlib.h>
#include <sys/random.h>

int main(void) {
    unsigned char a[256], b[256];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    expect("getentropy 256", getentropy(a, sizeof a), 0);
    expect("getentropy 256 again", getentropy(b, sizeof b), 0);
    expect_true("two draws differ", memcmp(a, b, sizeof a) != 0);
    int counts[256] = {0}, distinct = 0;
    for (int i = 0; i < 256; i++) counts[a[i]]++;
    for (int i = 0; i < 256; i++) distinct += counts[i] > 0;
    expect_true("at least 100 distinct byte values in 256", distinct >= 100);
    expect("getentropy 257 (over the limit)", getentropy(a, 257), EIO);
    expect("getentropy 0", getentropy(a, 0), 0);
    uint32_t r1 = arc4random(), r2 = arc4random(), r3 = arc4random();
    expect_true("arc4random varies", !(r1 == r2 && r2 == r3));
    expect_true("arc4random_uniform(10) < 10", arc4random_uniform(10) < 10);
    return done();
}
