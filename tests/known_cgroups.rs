//! The kernel's table of cgroups the daemon knows (`known_cgroups`): real
//! BPF programs, real execs, records read straight from the ring buffers.
//! A record carries its cgroup's path exactly while the table does not hold
//! the cgroup's id: never left out for a cgroup the daemon has not been told
//! of, and left out once it has.
mod common;

use std::mem::MaybeUninit;
use std::process::Command;
use std::time::{Duration, Instant};

use execwatch::bpf_loader::{known_slots, BpfLoader, Config};
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

/// An id other than `not` whose first slot is `slot`.
fn id_with_first_slot(slot: u32, from: u64, not: &[u64]) -> u64 {
    (from..)
        .find(|&c| known_slots(c)[0] == slot && !not.contains(&c))
        .expect("a slot is hit within 2^64 ids")
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

    // Push it out: `rival` shares its first slot, and `filler` holds the
    // rival's second, so the rival takes the first from it.
    let [ours, _] = known_slots(id);
    let rival = id_with_first_slot(ours, id + 1, &[id]);
    let filler = id_with_first_slot(known_slots(rival)[1], 1, &[id, rival]);
    assert_ne!(known_slots(rival)[1], ours, "pick another rival");
    loader.mark_cgroups_known(&[filler, rival]).unwrap();
    assert!(loader.cgroup_known(rival) && loader.cgroup_known(filler));
    assert!(!loader.cgroup_known(id));
    let displaced = exec_record(&mut rings, &format!("{m}-3"));
    assert_eq!(displaced.cgroup_id, id);
    assert!(
        displaced.cgroup_path.is_some(),
        "an id pushed out of its slots must carry its path again"
    );

    // Written back, it takes its second slot: the BPF side looks there too.
    loader.mark_cgroups_known(&[id]).unwrap();
    assert!(loader.cgroup_known(id) && loader.cgroup_known(rival));
    let second = exec_record(&mut rings, &format!("{m}-4"));
    assert_eq!(
        second.cgroup_path, None,
        "an id in its second slot is known to the BPF side"
    );

    // All at once, as when the cache is emptied or a daemon leaves its
    // programs to the next.
    loader.forget_all_cgroups();
    for x in [id, rival, filler] {
        assert!(!loader.cgroup_known(x));
    }
    let after_all = exec_record(&mut rings, &format!("{m}-5"));
    assert!(
        after_all.cgroup_path.is_some(),
        "after forgetting every cgroup, records must carry their path again"
    );
}
