//! Privileged suite for the `peapod` CLI: its local image store (`peapod::images`:
//! archives imported, images pulled from a local registry (Debian's `docker-registry`),
//! layers stacked with overlayfs on the real kernel, garbage collection), and every
//! example pod in embedded and CRI mode. Runs as root; every test checks that it leaves
//! nothing behind.
//!
//! `harness = false`: this binary is also a container init helper (`sandbox::init`) and
//! the importer child of the concurrency test, so `main` dispatches to those first.

mod faults;
mod images;
mod pods;
mod probes;
mod security;

use faults::*;
use images::*;
use peapod_tests::tests;
use pods::*;
use probes::*;
use security::*;

/// Each pod test twice: `embedded::NAME` and `cri::NAME`.
macro_rules! both_modes {
    ($($f:ident),* $(,)?) => {
        vec![$(
            (format!("embedded::{}", stringify!($f)), (|| $f(Mode::Embedded)) as peapod_tests::TestFn),
            (format!("cri::{}", stringify!($f)), (|| $f(Mode::Cri)) as peapod_tests::TestFn),
        )*]
    };
}

fn main() {
    sandbox::init::run_if_requested();
    run_import_child_if_requested();
    // The pods' CNI bridge is shared host infrastructure; the suite removes it again if
    // it was not there before.
    let bridge_before = std::path::Path::new("/sys/class/net/peapod0").exists();
    // So are portmap's shared nat chains, made by the first host port mapped.
    let portmap_chains_before = portmap_chains_exist();
    let tests: Vec<(String, peapod_tests::TestFn)> = tests![
        oci_archive_imports_and_busybox_mounts_from_its_layer,
        whiteouts_in_an_upper_layer_hide_lower_files,
        docker_archive_imports_with_its_config_and_shared_layers,
        pull_from_a_local_registry_picks_the_host_platform,
        missing_images_fail_with_err_image_pull,
        list_and_remove_collect_unused_blobs_and_layers,
        concurrent_imports_do_not_corrupt_the_store,
        corrupt_archives_fail_and_leave_nothing,
    ]
    .into_iter()
    .map(|(name, f)| (format!("images::{name}"), f))
    .chain(both_modes![
        shared_volume_writer_and_reader_share_a_disk_and_an_ip,
        web_server_log_sidecar_reads_the_access_log,
        init_container_runs_to_completion_before_the_app,
        native_sidecar_starts_before_the_app_and_keeps_running,
        requests_and_limits_size_the_pod_cgroup,
        finished_pods_take_kubelets_phase_and_reasons,
        exec_passes_stdin_and_exit_codes,
        a_sigkilled_cli_leaves_nothing_delete_cannot_clean,
        bad_manifests_fail_clearly_and_create_nothing,
        runtime_default_blocks_user_namespaces_and_unconfined_allows_them,
        localhost_profiles_apply_privileged_ignores_them_and_pod_sysctls_apply,
        bad_security_contexts_fail_by_field_and_create_nothing,
        ten_containers_oom_killed_at_once_are_each_oomkilled,
        config_maps_and_secrets_fill_the_environment,
        config_maps_secrets_and_the_downward_api_fill_read_only_volumes,
        volumes_that_cannot_be_filled_fail_the_run_and_leave_nothing,
        host_ports_reach_the_pod_and_go_with_it,
        run_pulls_images_as_their_pull_policies_ask,
        pull_secrets_authenticate_to_a_registry,
    ])
    .chain(
        tests![
            restarts_follow_the_policy_and_sidecars_stop_after_the_apps,
            a_killed_shim_is_cleaned_up_by_delete,
            a_full_state_dir_fails_run_with_enospc_and_leaves_nothing,
            a_full_image_store_fails_import_with_enospc_and_leaves_nothing,
            a_full_log_disk_drops_output_without_stalling_the_app,
            a_dynamically_linked_pause_is_refused_before_anything_exists,
            probes_gate_readiness_and_restart_the_unhealthy,
            grpc_probe_follows_a_real_health_server,
            lifecycle_hooks_run_around_the_container,
            a_failed_pull_backs_off_and_the_pod_starts_once_the_image_is_there
        ]
        .into_iter()
        .map(|(name, f)| (format!("embedded::{name}"), f)),
    )
    .chain(std::iter::once((
        "cri::probes_are_refused_in_cri_mode".to_string(),
        probes_are_refused_in_cri_mode as peapod_tests::TestFn,
    )))
    .collect();
    peapod_tests::run_privileged_suite(tests, move || {
        // The pods' parent cgroup `peapod`, when empty.
        sandbox::cgroups::rmdir_everywhere("peapod");
        if !bridge_before {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", "peapod0"])
                .output();
        }
        if !portmap_chains_before && portmap_chains_exist() {
            remove_idle_portmap_chains()?;
        }
        Ok(())
    });
}
