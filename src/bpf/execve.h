/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one definition of what the BPF program hands to the daemon, and of
 * every limit the two share. Rust gets the same layout and numbers from the
 * skeleton's generated `types` module (enums reach BTF; #defines would not).
 */
#ifndef EXECWATCH_EXECVE_H
#define EXECWATCH_EXECVE_H

enum event_limits {
	/* Task name with its NUL (TASK_COMM_LEN); names keep 15 bytes. */
	EVENT_COMM_LEN = 16,
	/* Bytes of the file name as passed to exec (PATH_MAX, NUL included). */
	FILENAME_MAX_LEN = 4096,
	/* Bytes of a walked path (executable, cwd, script): components leaf first. */
	EXE_PATH_MAX_LEN = 4096,
	/* Longest path component the kernel allows (NAME_MAX + NUL). */
	EXE_COMPONENT_MAX = 256,
	/* Components walked per path; deeper paths are flagged truncated. */
	EXE_PATH_MAX_DEPTH = 64,
	/* Hard upper bound of --max-args-bytes; a power of two. */
	ARGS_MAX_LIMIT = 128 * 1024,
	/* Default of --max-args-bytes. */
	ARGS_DEFAULT_LIMIT = 16 * 1024,
	/* Failed execs read argv one pointer at a time; at most this many. */
	FAILED_ARGV_MAX = 1024,
	/* Layers of an overlayfs checked for FUSE; an executable on one with
	 * more is flagged as served by FUSE (could not tell). */
	OVERLAY_LAYERS_MAX = 128,
	/* Bytes of the cgroup v2 path, components leaf first. */
	CGROUP_PATH_MAX_LEN = 2048,
	/* Deepest cgroup path walked. */
	CGROUP_PATH_MAX_DEPTH = 32,
	/* Bytes of the environment copied when --env is given (a power of two). */
	ENV_MAX_LEN = 32 * 1024,
	/* Entries of each filter list (--uid, --comm, --exclude-comm). */
	FILTER_LIST_MAX = 64,
	/* Slots of the caller table (a power of two), indexed by pid. */
	CALLER_SLOTS = 16384,
	/*
	 * Slots of the table of cgroups the daemon has a path for (a power of
	 * two). An id may sit in either of two slots: the top bits of its
	 * folded halves times each of two odd multipliers (ids come from a
	 * cyclic allocator, so a plain modulus would map strided ids alike).
	 */
	KNOWN_CGROUPS_BITS = 14,
	KNOWN_CGROUPS_MAX = 1 << KNOWN_CGROUPS_BITS,
	KNOWN_CGROUPS_HASH_A = 0x45d9f3b,
	KNOWN_CGROUPS_HASH_B = 0x27d4eb2f,
	/* A new cgroup's record wakes the reader at most this often per CPU. */
	NEW_CGROUP_WAKEUP_GAP_NS = 1000 * 1000,
	/*
	 * Variable part of a record: filename, exe path, cgroup path, cwd,
	 * script path, argument bytes, environment. The argument region has
	 * ARGS_MAX_LIMIT of slack so a failed exec can read one whole string
	 * at any offset below the limit.
	 */
	EVENT_DATA_MAX = FILENAME_MAX_LEN + 3 * EXE_PATH_MAX_LEN + CGROUP_PATH_MAX_LEN +
			 EXE_COMPONENT_MAX + 2 * ARGS_MAX_LIMIT + ENV_MAX_LEN,
};

/* Record kinds; the daemon rejects any other. */
enum event_kind {
	EVENT_KIND_EXEC = 1,
	/* The last thread of a process exited (header only). */
	EVENT_KIND_EXIT = 2,
};

/* Bits of event.flags. */
enum event_flag {
	EVENT_FLAG_ARGS_TRUNCATED = 1 << 0,
	EVENT_FLAG_FILENAME_TRUNCATED = 1 << 1,
	EVENT_FLAG_EXE_TRUNCATED = 1 << 2,
	EVENT_FLAG_ARGS_READ_FAILED = 1 << 3,
	EVENT_FLAG_EXE_READ_FAILED = 1 << 4,
	EVENT_FLAG_CALLER_COMM_MISSING = 1 << 5,
	/* Failed exec seen at execveat (else execve); success does not say. */
	EVENT_FLAG_SYSCALL_EXECVEAT = 1 << 6,
	/* The cgroup path is in the record (first exec seen in this cgroup). */
	EVENT_FLAG_CGROUP_PATH = 1 << 7,
	EVENT_FLAG_CGROUP_TRUNCATED = 1 << 8,
	EVENT_FLAG_CWD_TRUNCATED = 1 << 9,
	/* The executable's dentry has no parent: a memfd or other pseudo file;
	 * its one component is its name, not a path. */
	EVENT_FLAG_EXE_PSEUDO = 1 << 10,
	/* The executable sits on an overlayfs upper (writable) layer. */
	EVENT_FLAG_EXE_UPPER_LAYER = 1 << 11,
	/* The new credentials were compared with the caller's (saved at
	 * task_rename); else only the file mode and secureexec say. */
	EVENT_FLAG_OLD_CREDS = 1 << 12,
	/* The exec raised privileges (bprm->secureexec, AT_SECURE). */
	EVENT_FLAG_SECUREEXEC = 1 << 13,
	EVENT_FLAG_ENV_TRUNCATED = 1 << 14,
	EVENT_FLAG_SCRIPT_TRUNCATED = 1 << 15,
	/* An interpreter runs the file exec was given (#! script, binfmt_misc):
	 * bprm->interp differs from bprm->filename. */
	EVENT_FLAG_SCRIPT = 1 << 16,
	/* The path lies outside the process's root directory (a chroot): it is
	 * then the path from the root of the mount namespace. */
	EVENT_FLAG_EXE_OUTSIDE_ROOT = 1 << 17,
	EVENT_FLAG_CWD_OUTSIDE_ROOT = 1 << 18,
	EVENT_FLAG_SCRIPT_OUTSIDE_ROOT = 1 << 19,
	/* The executable's bytes may come from a FUSE server: its file system
	 * is FUSE, or is an overlayfs with a FUSE layer, or is stacked in a way
	 * the program cannot see through. The daemon does not read the file. */
	EVENT_FLAG_EXE_FUSE = 1 << 20,
};

/* Indexes of the per-CPU `stats` counters. */
enum stat_index {
	/* Exec hooks that ran and passed the filters: delivered + lost. */
	STAT_SEEN = 0,
	/* Records written into the ring buffer. */
	STAT_SUBMITTED,
	/* Records dropped: ring buffer full. */
	STAT_LOST_RINGBUF_FULL,
	/* Records dropped: scratch buffer unavailable (should never happen). */
	STAT_LOST_NO_SCRATCH,
	/* Delivered with a degraded field: a read of user/kernel memory failed. */
	STAT_ARGS_READ_FAILED,
	STAT_FILENAME_READ_FAILED,
	STAT_EXE_READ_FAILED,
	STAT_CALLER_COMM_MISSING,
	/* Delivered with a forced reader wakeup (ring buffer past threshold,
	 * or the first record of a cgroup the daemon does not know). */
	STAT_WAKEUPS_FORCED,
	/* Execs dropped by the filters before any record was made. */
	STAT_FILTERED,
	/* A cgroup or cwd path component could not be read. */
	STAT_PATH_READ_FAILED,
	STAT_MAX,
};

/*
 * Fixed header of every record. Followed in the ring buffer by
 * filename_len + exe_len + cgroup_len + cwd_len + script_len + args_len +
 * env_len bytes of data, in that order.
 */
struct event {
	/* 64-bit fields first, then 32-bit, then 16-bit: no padding anywhere,
	 * so the record is the same bytes on both sides. */
	__u64 seq;       /* global, from 0; a gap means records were lost */
	__u64 boot_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id; /* cgroup v2 id of the process */
	__u64 start_ns;  /* process start, CLOCK_BOOTTIME (group leader's) */
	__u64 parent_start_ns; /* the real parent's start, likewise */
	/* Exec: when the parent never exec'd (a subshell), its image is that of
	 * its nearest ancestor that did: that process's start (and image_pid). */
	__u64 image_start_ns;
	__u64 old_cap_permitted; /* the caller's, when EVENT_FLAG_OLD_CREDS */
	__u64 cap_permitted;
	/* The executable's inode (successful execs). */
	__u64 exe_ino;
	__u64 exe_size;
	__s64 exe_mtime_sec;
	__s64 exe_ctime_sec;
	__u32 kind;      /* enum event_kind */
	__u32 flags;     /* enum event_flag bits */
	__s32 retval;    /* 0, or -errno of a failed exec */
	__u32 pid;       /* tgid */
	__u32 tid;       /* thread that called exec (old tid on success) */
	__u32 ppid;      /* tgid of the real parent */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 auid;      /* loginuid; (u32)-1 when unset */
	__u32 sessionid; /* audit session id; (u32)-1 when unset */
	__u32 pidns_ino; /* pid namespace of the process */
	__u32 ns_pid;    /* pid inside that namespace */
	__u32 mntns_ino;
	__u32 sid;       /* session id, in the initial pid namespace; 0: none */
	__u32 pgid;      /* process group id, likewise */
	__u32 tty_major; /* controlling terminal; 0:0 when there is none */
	__u32 tty_minor;
	__u32 old_euid;  /* the caller's, when EVENT_FLAG_OLD_CREDS */
	__u32 old_egid;
	__u32 exe_mtime_nsec;
	__u32 exe_ctime_nsec;
	__u32 exe_dev;   /* kernel dev_t: major << 20 | minor */
	__u32 exe_nlink;
	__u32 exe_uid;
	__u32 exe_gid;
	__u32 exe_mode;
	__u32 argc;      /* total argument count */
	__u32 args_size; /* total bytes of the argument area (NULs included) */
	__u32 args_len;  /* argument bytes in this record */
	__u32 env_len;   /* environment bytes in this record (--env only) */
	__s32 dirfd;     /* execveat dirfd (failed execveat only) */
	__u32 at_flags;  /* execveat flags (failed execveat only) */
	__u32 exit_status; /* EVENT_KIND_EXIT: wait status (code << 8 | core 0x80 | signal) */
	__u32 image_pid; /* 0: the parent exec'd itself */
	__u16 filename_len; /* bytes, NUL included */
	__u16 exe_len;      /* bytes: components leaf first, each NUL-ended */
	__u16 cgroup_len;   /* bytes, like exe_len; 0 once the daemon knows it */
	__u16 cwd_len;      /* bytes, like exe_len */
	__u16 script_len;   /* bytes, like exe_len; 0 unless a #! script ran */
	__u16 reserved[3];
	char comm[EVENT_COMM_LEN];        /* after exec */
	char caller_comm[EVENT_COMM_LEN]; /* before exec */
#ifdef EXECWATCH_TEST_LAYOUT
	__u64 test_layout; /* test-only build: a header the default build cannot read */
#endif
};

/*
 * Hand-over between daemons (restart, upgrade; docs/design.md). A daemon
 * takes over the kept ring buffer, counters, caller comms and meta map only
 * when their version is its own: bump EVENT_LAYOUT_VERSION on any change of
 * struct event, enum stat_index, struct caller_comm or struct handover_meta.
 * Fixed across versions: every record starts with its __u64 seq, which is
 * EVENT_NO_SEQ in a record that is not an event (none today; a daemon skips
 * such records in a buffer of another layout), the `seq` map, the `layout`
 * map with struct event_layout_desc, and the dispatchers with their program
 * arrays.
 *
 * An upgraded daemon translates the records left in the previous buffer by
 * field name (the `layout` map), so these rules keep that exact:
 * - A field keeps its name only while it keeps its size and meaning (unit,
 *   encoding, enum values, flag bits). A change of meaning gets a new name
 *   (and a new flag bit, never a reused one); a change of size is refused,
 *   and the old buffer's records are then counted as lost (reason upgrade).
 * - A field the old layout lacks reads as 0, so 0 must mean "not known".
 * - The variable parts after the header keep their order; a new one goes
 *   at the end, with a new length field (0 in translated records).
 */
#define EVENT_NO_SEQ (~0ULL)
#ifdef EXECWATCH_TEST_LAYOUT
#define EVENT_LAYOUT_TEST_OFFSET 1000 /* test-only build, see build.rs */
#else
#define EVENT_LAYOUT_TEST_OFFSET 0
#endif
enum event_layout {
	EVENT_LAYOUT_VERSION = 1 + EVENT_LAYOUT_TEST_OFFSET,
};

/*
 * The `layout` map's one value: struct event as the daemon that loaded the
 * maps was built, generated from its BTF at load (struct event stays the one
 * definition). FIXED ACROSS VERSIONS, like the `seq` map: an older and a
 * newer daemon both read it, so never change this struct, its limits or the
 * map's shape; a need for more gets a map of another name.
 */
enum event_layout_desc_limits {
	/* Bytes of a field name, NUL-padded (a longer name fails a unit test). */
	EVENT_LAYOUT_NAME_LEN = 32,
	/* Fields described, at most (more fails a unit test). */
	EVENT_LAYOUT_FIELDS_MAX = 128,
};

struct event_layout_field {
	char name[EVENT_LAYOUT_NAME_LEN];
	__u32 offset; /* bytes from the start of the record */
	__u32 size;   /* bytes */
};

struct event_layout_desc {
	__u32 version;    /* EVENT_LAYOUT_VERSION of that build */
	__u32 header_len; /* sizeof(struct event): the variable parts follow */
	__u32 nr_fields;  /* entries of fields[] in use; 0: not filled */
	__u32 events_map_id; /* kernel id of the ring buffer its records are in */
	struct event_layout_field fields[EVENT_LAYOUT_FIELDS_MAX];
};

/* Bits of handover_meta.flags. */
enum handover_flag {
	/* The daemon that wrote it exited and saved its final counts. */
	HANDOVER_CLEAN_EXIT = 1 << 0,
};

/*
 * The `meta` map's one value; the BPF side never touches it. The daemon
 * side of the counters (crate::counters) as all daemons on these maps left
 * them, so that the next one's summary still adds up.
 */
struct handover_meta {
	__u32 layout_version; /* of the maps kept with this one */
	__u32 flags;          /* enum handover_flag */
	__u64 delivered;      /* records decoded and written, all daemons */
	__u64 decode_errors;  /* records rejected, all daemons */
	/* Loss counters as last reported: the next daemon reports the rest. */
	__u64 lost_ringbuf_full_reported;
	__u64 lost_no_scratch_reported;
	/* The daemons' own loss counters, and records of an older layout read. */
	__u64 lost_output;
	__u64 lost_shutdown;
	__u64 lost_upgrade;
	__u64 seen_upgrade;
};

/*
 * The `progress` map: an array of __u64 (BPF_F_MMAPABLE) that the running
 * daemon writes as it goes, in memory the kernel keeps when the daemon dies.
 * After a crash the next daemon reads from it what the crashed one had
 * taken from the rings and never counted (delivered or lost), and counts
 * that as lost (reason crash). Slot PROGRESS_SELECT says which of two copies
 * is whole (1 or 2; 0: none yet); each copy is PROGRESS_RING + rings slots,
 * the first at PROGRESS_COPY. A daemon writes the other copy, then the
 * selector, then frees the rings' space up to the positions in it, so a
 * crash at any point leaves a whole copy that is at or ahead of the rings.
 * Taken over with the counters (same layout, same shape); a daemon from
 * before it leaves crash losses uncounted. The BPF side never touches it.
 */
enum progress_slot {
	PROGRESS_SELECT = 0,
	PROGRESS_COPY = 1,
	/* Within a copy: */
	PROGRESS_TAKEN = 0,         /* records taken from the kept rings, all daemons */
	PROGRESS_LOST_CRASH = 1,    /* of those, taken by a daemon that died: lost */
	/* struct handover_meta's daemon counts, as of this copy (the loss
	 * reports' positions stay in `meta`) */
	PROGRESS_DELIVERED = 2,
	PROGRESS_DECODE_ERRORS = 3,
	PROGRESS_LOST_OUTPUT = 4,
	PROGRESS_LOST_SHUTDOWN = 5,
	PROGRESS_LOST_UPGRADE = 6,
	PROGRESS_SEEN_UPGRADE = 7,
	PROGRESS_RING = 8,          /* ring i's consumer position: slot PROGRESS_RING + i */
};

#endif /* EXECWATCH_EXECVE_H */
