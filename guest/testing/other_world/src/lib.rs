//! `other_world`: a valid component that does not fit the `handler` world.
//!
//! It exports `run` instead of `handle` and does not import `sandsock:net/io`, so
//! the host's check must refuse it with an error naming the missing export
//! `handle` and the missing import, rather than fail later or crash.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export run: func();
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() {}
}

export!(Other);
