//! std::fs as Rust programs use it: create_dir_all, write, read, rename, read_dir,
//! metadata, remove_dir_all, and the errors std reports; each check prints what it saw.
// run: -- arg1 "two words"
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};

struct Checks {
    failures: u32,
    count: u32,
}

impl Checks {
    fn expect<T: std::fmt::Debug>(&mut self, label: &str, got: std::io::Result<T>, want: Option<ErrorKind>) {
        self.count += 1;
        let seen = match &got {
            Ok(_) => None,
            Err(e) => Some(e.kind()),
        };
        println!("{label}: {}", seen.map_or("ok".to_string(), |k| format!("{k:?}")));
        if seen != want {
            println!("FAIL {label}: want {:?}", want);
            self.failures += 1;
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, label: &str, got: T, want: T) {
        self.count += 1;
        println!("{label}: {got:?}");
        if got != want {
            println!("FAIL {label}: want {want:?}");
            self.failures += 1;
        }
    }
}

fn main() {
    let mut c = Checks { failures: 0, count: 0 };
    let args: Vec<String> = std::env::args().skip(1).collect();
    c.eq("args", args, vec!["arg1".to_string(), "two words".to_string()]);
    c.eq("env is empty", std::env::vars().count(), 0);
    c.expect("create_dir_all a/b/c", fs::create_dir_all("/a/b/c"), None);
    c.expect("write a/b/c/f.txt", fs::write("/a/b/c/f.txt", b"hello from rust\n"), None);
    c.eq("read_to_string", fs::read_to_string("/a/b/c/f.txt").ok(), Some("hello from rust\n".to_string()));
    c.expect("create_dir existing", fs::create_dir("/a"), Some(ErrorKind::AlreadyExists));
    c.expect("read missing", fs::read("/missing"), Some(ErrorKind::NotFound));
    c.expect("rename into a", fs::rename("/a/b/c/f.txt", "/a/g.txt"), None);
    let mut names: Vec<String> = fs::read_dir("/a")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    c.eq("read_dir /a", names, vec!["b".to_string(), "g.txt".to_string()]);
    let meta = fs::metadata("/a/g.txt");
    c.eq("metadata len", meta.as_ref().map(|m| m.len()).ok(), Some(16));
    c.eq("is_file", meta.as_ref().map(|m| m.is_file()).ok(), Some(true));
    c.eq("symlink_metadata of link-file is a symlink", fs::symlink_metadata("/link-file").map(|m| m.file_type().is_symlink()).ok(), Some(true));
    c.eq("read_link", fs::read_link("/link-file").ok().map(|p| p.to_string_lossy().into_owned()), Some("file.txt".to_string()));
    let mut f = fs::OpenOptions::new().append(true).open("/a/g.txt").expect("open append");
    c.expect("append", f.write_all(b"more\n"), None);
    drop(f);
    let mut f = fs::OpenOptions::new().read(true).write(true).open("/a/g.txt").expect("open rw");
    c.eq("seek end", f.seek(SeekFrom::End(0)).ok(), Some(21));
    c.expect("set_len", f.set_len(5), None);
    let mut s = String::new();
    c.expect("seek start", f.seek(SeekFrom::Start(0)), None);
    c.expect("read back", f.read_to_string(&mut s), None);
    c.eq("content after set_len", s, "hello".to_string());
    drop(f);
    // this std maps WASI's ENOTEMPTY (55) to no ErrorKind of its own: compare the errno
    c.eq("remove_dir on non-empty", fs::remove_dir("/a").map_err(|e| e.raw_os_error()), Err(Some(55)));
    for path in ["/a/g.txt", "/a/b/c", "/a/b", "/a"] {
        let removed = if path.ends_with(".txt") { fs::remove_file(path) } else { fs::remove_dir(path) };
        c.expect(&format!("remove {path}"), removed, None);
    }
    c.eq("a is gone", fs::metadata("/a").is_err(), true);
    c.expect("open ../secret", fs::read("/../secret/secret.txt"), Some(ErrorKind::PermissionDenied));
    c.expect("write through out-secret", fs::write("/out-secret", b"x"), Some(ErrorKind::PermissionDenied));
    c.expect("create_dir in a subdir opened by std", fs::create_dir("/dir/made"), None);
    c.expect("remove it", fs::remove_dir("/dir/made"), None);
    eprintln!("stderr from rust");
    println!("{} checks, {} failed", c.count, c.failures);
    std::process::exit(if c.failures == 0 { 0 } else { 1 });
}
