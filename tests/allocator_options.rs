//! The operator binary's jemalloc runs with the options `.cargo/config.toml` builds it
//! with (one arena, small thread caches): read back from jemalloc's own statistics, which
//! `_RJEM_MALLOC_CONF=stats_print:true` makes it print when the process exits.

use std::process::Command;

#[test]
fn the_operator_binary_allocates_from_one_arena_with_small_thread_caches() {
    let output = Command::new(env!("CARGO_BIN_EXE_neurallog-operator"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("the operator binary runs");
    assert!(output.status.success(), "{output:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("jemalloc statistics"),
        "jemalloc printed no statistics: is it still the global allocator?\n{printed}"
    );
    for option in [
        "opt.narenas: 1\n",
        "opt.tcache_max: 4096\n",
        "opt.tcache_nslots_small_max: 32\n",
    ] {
        assert!(printed.contains(option), "no `{option}` in:\n{printed}");
    }
}
