//! std::fs::remove_dir_all: std opens each directory and removes its entries through
//! that descriptor, so it needs the directory's rights to follow it (issue 11).
use std::fs;

fn main() {
    let mut failures = 0;
    fs::create_dir_all("/tree/a/b").expect("create_dir_all");
    fs::write("/tree/a/b/f", b"x").expect("write");
    fs::write("/tree/top", b"y").expect("write");
    match fs::remove_dir_all("/tree") {
        Ok(()) => println!("remove_dir_all /tree: ok"),
        Err(e) => {
            println!("remove_dir_all /tree: {:?}", e.kind());
            println!("FAIL remove_dir_all /tree: want ok");
            failures += 1;
        }
    }
    let gone = fs::symlink_metadata("/tree").is_err();
    println!("/tree is gone: {gone}");
    if !gone {
        println!("FAIL /tree is gone: want true");
        failures += 1;
    }
    match fs::remove_dir_all("/dir/nested/file") {
        Ok(()) => println!("FAIL remove_dir_all on a file: want an error"),
        Err(e) => println!("remove_dir_all on a file: errno {:?}", e.raw_os_error()),
    }
    std::process::exit(if failures == 0 { 0 } else { 1 });
}
