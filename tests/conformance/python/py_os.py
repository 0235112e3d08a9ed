"""Python's os, io and shutil on WASI (componentize-py): what CPython programs do first.
Each check prints what it saw and a FAIL line when that is not what wasmtime does."""
# run: -- first "second arg"

import errno
import os
import shutil
import sys

from wit_world import exports

failures = 0


def check(label: str, got: object, want: object) -> None:
    global failures
    print(f"{label}: {got!r}")
    if got != want:
        print(f"FAIL {label}: want {want!r}")
        failures += 1


def error_of(fn, *args) -> str:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return "ok"


class Run(exports.Run):
    def run(self) -> None:
        check("argv[1:]", sys.argv[1:], ["first", "second arg"])
        check("environ", dict(os.environ), {})
        check("listdir /", sorted(os.listdir("/"))[:4], ["abs", "dangling", "dir", "empty.txt"])
        with open("/file.txt") as f:
            check("read file.txt", f.read(), "hello, world\n")
        with open("/link-file", "rb") as f:
            check("read through link-file", f.read(), b"hello, world\n")
        check("isdir link-dir", os.path.isdir("/link-dir"), True)
        check("islink dangling", os.path.islink("/dangling"), True)
        check("exists dangling", os.path.exists("/dangling"), False)
        check("open loop", error_of(open, "/loop"), "ELOOP")
        check("open out-secret", error_of(open, "/out-secret"), "EPERM")
        check("open ../secret", error_of(open, "/../secret/secret.txt"), "EPERM")
        check("readlink out", os.readlink("/out"), "..")
        os.makedirs("/made/deep/er")
        with open("/made/deep/er/f.txt", "w") as f:
            f.write("x" * 100_000)
        check("getsize", os.path.getsize("/made/deep/er/f.txt"), 100_000)
        with open("/made/deep/er/f.txt", "r+b") as f:
            f.seek(10)
            f.write(b"HELLO")
            f.seek(-3, os.SEEK_END)
            check("tell", f.tell(), 99_997)
            f.truncate(20)
        with open("/made/deep/er/f.txt", "rb") as f:
            check("after seek+write+truncate", f.read(), b"xxxxxxxxxxHELLOxxxxx")
        with open("/made/log.txt", "a") as f:
            f.write("one\n")
        with open("/made/log.txt", "a") as f:
            f.write("two\n")
        with open("/made/log.txt") as f:
            check("appended", f.read(), "one\ntwo\n")
        os.rename("/made/log.txt", "/made/deep/log.txt")
        check(
            "walk",
            sorted((d, sorted(fs)) for d, _, fs in os.walk("/made")),
            [("/made", []), ("/made/deep", ["log.txt"]), ("/made/deep/er", ["f.txt"])],
        )
        os.utime("/made/deep/log.txt", ns=(1_000_000_001, 2_000_000_002))
        st = os.stat("/made/deep/log.txt")
        check("utime ns", (st.st_atime_ns, st.st_mtime_ns), (1_000_000_001, 2_000_000_002))
        check("rmdir non-empty", error_of(os.rmdir, "/made"), "ENOTEMPTY")
        check("mkdir existing", error_of(os.mkdir, "/made"), "EEXIST")
        check("remove a dir", error_of(os.remove, "/made"), "EISDIR")
        check("rmtree", error_of(shutil.rmtree, "/made"), "ok")
        check("gone", os.path.exists("/made"), False)
        check(
            "scandir types",
            sorted((e.name, e.is_dir(), e.is_symlink()) for e in os.scandir("/dir")),
            [("empty", True, False), ("nested", True, False)],
        )
        print(f"{failures} failed", flush=True)
        if failures:
            sys.stdout.flush()
            os._exit(1)
