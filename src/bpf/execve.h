/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one definition of what the BPF program hands to the daemon. Rust gets
 * the same layout from the skeleton's generated `types` module.
 */
#ifndef EXECWATCH_EXECVE_H
#define EXECWATCH_EXECVE_H

/* Limits, as an enum so that they reach BTF and the Rust skeleton types. */
enum event_limits {
	EVENT_COMM_LEN = 16,
	/* Bytes of the file name as passed to exec (PATH_MAX, NUL included). */
	FILENAME_MAX_LEN = 4096,
	/* Bytes of the executable's path, stored as components leaf first. */
	EXE_PATH_MAX_LEN = 4096,
	/* Longest path component the kernel allows (NAME_MAX + NUL). */
	EXE_COMPONENT_MAX = 256,
	/* Deepest path walked; deeper paths set EVENT_FLAG_EXE_TRUNCATED. */
	EXE_PATH_MAX_DEPTH = 64,
	/* Hard upper bound of --max-args-bytes; a power of two. */
	ARGS_MAX_LIMIT = 128 * 1024,
	/* Default of --max-args-bytes. */
	ARGS_DEFAULT_LIMIT = 16 * 1024,
	/* Failed execs read argv one pointer at a time; at most this many. */
	FAILED_ARGV_MAX = 1024,
	/* Bytes of the cgroup v2 path, components leaf first. */
	CGROUP_PATH_MAX_LEN = 2048,
	/* Deepest cgroup path walked. */
	CGROUP_PATH_MAX_DEPTH = 32,
	/*
	 * Variable part of a record: filename, exe path, cgroup path, then
	 * argument bytes. The argument region has ARGS_MAX_LIMIT of slack so a
	 * failed exec can read one whole string at any offset below the limit.
	 */
	EVENT_DATA_MAX = FILENAME_MAX_LEN + EXE_PATH_MAX_LEN + CGROUP_PATH_MAX_LEN +
			 EXE_COMPONENT_MAX + 2 * ARGS_MAX_LIMIT,
};

/* Record kinds; the daemon rejects any other. */
enum event_kind {
	EVENT_KIND_EXEC = 1,
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
	/* Delivered with a forced reader wakeup (ring buffer past threshold). */
	STAT_WAKEUPS_FORCED,
	/* Execs dropped by the filters before any record was made. */
	STAT_FILTERED,
	STAT_MAX,
};

/*
 * Fixed header of every record. Followed in the ring buffer by
 * filename_len + exe_len + cgroup_len + args_len bytes of data.
 */
struct event {
	__u64 seq;       /* global, from 0; a gap means records were lost */
	__u64 boot_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id; /* cgroup v2 id of the process */
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
	__u32 argc;      /* total argument count */
	__u32 args_size; /* total bytes of the argument area (NULs included) */
	__u32 args_len;  /* argument bytes in this record */
	__s32 dirfd;     /* execveat dirfd (failed execveat only) */
	__u32 at_flags;  /* execveat flags (failed execveat only) */
	__u16 filename_len; /* bytes, NUL included */
	__u16 exe_len;      /* bytes: components leaf first, each NUL-ended */
	__u16 cgroup_len;   /* bytes, like exe_len; 0 once the daemon knows it */
	__u16 reserved;
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
 * Fixed across versions: every record starts with its __u64 seq, the `seq`
 * map, and the dispatchers with their program arrays.
 */
#ifdef EXECWATCH_TEST_LAYOUT
#define EVENT_LAYOUT_TEST_OFFSET 1000 /* test-only build, see build.rs */
#else
#define EVENT_LAYOUT_TEST_OFFSET 0
#endif
enum event_layout {
	EVENT_LAYOUT_VERSION = 1 + EVENT_LAYOUT_TEST_OFFSET,
};

/* The `meta` map's one value; the BPF side never touches it. */
struct handover_meta {
	__u32 layout_version; /* of the maps kept with this one */
	__u32 reserved;
	__u64 delivered;      /* records decoded and written, all daemons */
	__u64 decode_errors;  /* records rejected, all daemons */
	/* Loss counters as last reported: the next daemon reports the rest. */
	__u64 lost_ringbuf_full_reported;
	__u64 lost_no_scratch_reported;
};

#endif /* EXECWATCH_EXECVE_H */
