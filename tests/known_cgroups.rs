//! The kernel's table of cgroups the daemon knows (`known_cgroups`): real
//! BPF programs, real execs, records read straight from the ring buffers.
//! A record carries its cgroup's path exactly while the table does not hold
//! the cgroup's id: never left out for a cgroup the daemon has not been told
//! of, and left out once it has.
mod common;

use std::mem::MaybeUninit;
use std::process::Command;
use std::time::{Duration, Instant};

use execwatch::bpf_loader::{BpfLoader, Config, KNOWN_CGROUPS_MAX};
use execwatch::decode::ExecEvent;
use execwatch::event::Action;
use execwatch::ring_reader::{Next, Rings};

/// Run `true MARKER` and return the record of its exec.
fn exec_record(rings: &mut Rings, marker: &str) -> ExecEvent {
    let status = Command::new("/bin/true")
        .arg(marker)
        .status()
        .expect("run /bin/true");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        rings.wait(Duration::from_millis(50));
        rings.begin_batch();
        loop {
            let found = match rings.next(ExecEvent::decode) {
                Next::Record(Ok(ev)) => (ev.action == Action::Exec
                    && ev.args().any(|a| a == marker.as_bytes()))
                .then_some(ev),
                Next::Record(Err(e)) => panic!("a record did not decode: {e}"),
                Next::Busy | Next::Later | Next::Empty => break,
                Next::Corrupt => panic!("a ring buffer is corrupt"),
            };
            if let Some(ev) = found {
                rings.publish();
                return ev;
            }
        }
        rings.publish();
    }
    panic!("no record of the exec of `true {marker}` within 10 s");
}

#[test]
fn a_record_carries_its_cgroup_path_until_the_daemon_knows_the_cgroup() {
    common::require_root();
    let mut object = MaybeUninit::uninit();
    let mut loader =
        BpfLoader::load(&Config::default(), &mut object).expect("load the BPF programs");
    let mut rings = Rings::new(loader.take_rings()).expect("map the ring buffers");
    let m = common::marker("known-cgroups");

    let first = exec_record(&mut rings, &format!("{m}-1"));
    let id = first.cgroup_id;
    assert!(
        first.cgroup_path.is_some(),
        "a cgroup the daemon was never told of must carry its path"
    );
    assert!(!loader.cgroup_known(id));

    loader.mark_cgroups_known(&[id]).unwrap();
    assert!(loader.cgroup_known(id));
    let known = exec_record(&mut rings, &format!("{m}-2"));
    assert_eq!(known.cgroup_id, id);
    assert_eq!(
        known.cgroup_path, None,
        "a known cgroup's record carries no path"
    );

    // Another id of the same slot takes it: ours carries its path again.
    let rival = id + KNOWN_CGROUPS_MAX as u64;
    loader.mark_cgroups_known(&[rival]).unwrap();
    assert!(loader.cgroup_known(rival));
    assert!(!loader.cgroup_known(id));
    let displaced = exec_record(&mut rings, &format!("{m}-3"));
    assert_eq!(displaced.cgroup_id, id);
    assert!(
        displaced.cgroup_path.is_some(),
        "an id another took the slot from must carry its path again"
    );

    // Forgetting an id no longer in its slot leaves the slot's holder.
    loader.forget_cgroups(&[id]);
    assert!(
        loader.cgroup_known(rival),
        "forgetting one id cleared another's slot"
    );
    loader.mark_cgroups_known(&[id]).unwrap();
    loader.forget_cgroups(&[id]);
    assert!(!loader.cgroup_known(id));
    let forgotten = exec_record(&mut rings, &format!("{m}-4"));
    assert!(
        forgotten.cgroup_path.is_some(),
        "a forgotten cgroup must carry its path again"
    );

    // All at once, as a daemon that leaves its programs to the next does.
    loader.mark_cgroups_known(&[id]).unwrap();
    assert!(exec_record(&mut rings, &format!("{m}-5"))
        .cgroup_path
        .is_none());
    loader.forget_all_cgroups();
    assert!(!loader.cgroup_known(id) && !loader.cgroup_known(rival));
    let after_all = exec_record(&mut rings, &format!("{m}-6"));
    assert!(
        after_all.cgroup_path.is_some(),
        "after forgetting every cgroup, records must carry their path again"
    );
}
