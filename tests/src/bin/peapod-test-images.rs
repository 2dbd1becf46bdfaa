//! Builds the OCI image archive of the busybox and pause test images (from Debian's
//! busybox-static and `peapod-pause`, nothing downloaded) and prints its path, for
//! `peapod image import` in `make demo`.

fn main() {
    match peapod_tests::images::archive() {
        Ok(path) => println!("{}", path.display()),
        Err(e) => {
            eprintln!("peapod-test-images: {e:#}");
            std::process::exit(1);
        }
    }
}
