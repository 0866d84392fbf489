// SPDX-License-Identifier: GPL-2.0
/*
 * execwatch: one ring-buffer record per exec.
 *
 * Successful execs are taken at tp_btf/sched_process_exec, after the new
 * image is in place: argv (and, with --env, the environment) is read from the
 * new mm in one bounded copy (what really ran, whatever syscall or thread
 * started it), the executable from bprm->file. tp_btf/task_rename, which exec
 * hits before it commits the new credentials, keeps the caller's name and
 * credentials for that record. Neither needs tracefs.
 *
 * Failed execs are taken at the syscall exit tracepoints
 * (tp/syscalls/sys_exit_execve, sys_exit_execveat), which do need tracefs
 * (the loader mounts it when it must), or, where tracefs cannot be had, at
 * tp_btf/sys_exit, which needs none but runs for every syscall. fentry/fexit
 * would need neither, but some kernels refuse BPF trampolines
 * (docs/design.md).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "execve.h"

char LICENSE[] SEC("license") = "GPL";

/* Unused pointers that put the shared enums into BTF, for the Rust types. */
enum event_limits *unused_event_limits __attribute__((unused));
enum event_kind *unused_event_kind __attribute__((unused));
enum event_flag *unused_event_flag __attribute__((unused));
enum stat_index *unused_stat_index __attribute__((unused));
enum event_layout *unused_event_layout __attribute__((unused));
enum handover_flag *unused_handover_flag __attribute__((unused));
enum event_layout_desc_limits *unused_event_layout_desc_limits __attribute__((unused));
enum progress_slot *unused_progress_slot __attribute__((unused));

/* Set by the loader before load(). */
const volatile __u32 max_args_bytes = ARGS_DEFAULT_LIMIT;
/* Force a reader wakeup once this many bytes wait in the ring buffer. */
const volatile __u64 wakeup_bytes = 1 << 20;

/* Filters, applied before anything else: a filtered exec costs no record. */
const volatile __u32 filter_uids = 0;     /* only uids in uid_filter */
const volatile __u32 filter_comms = 0;    /* only comms in comm_filter */
const volatile __u32 exclude_comms = 0;   /* not comms in comm_exclude */
const volatile __u32 filter_cgroup = 0;   /* only under cgroup_filter[0] */
const volatile __u32 containers_only = 0; /* only outside the initial pid ns */
/* Copy the environment into successful exec records (--env). */
const volatile __u32 capture_env = 0;
/* Processes started before this (CLOCK_BOOTTIME ns, set at load) get an
 * exit record even if they never exec'd while execwatch ran. */
const volatile __u64 started_ns = 0;

struct event_buf {
	struct event ev;
	__u8 data[EVENT_DATA_MAX];
	/* The path walkers' running offset; not part of the record. */
	__u32 walk_len;
	/* When this CPU last woke the reader for a new cgroup's record. */
	__u64 cgroup_wakeup_ns;
};

/*
 * Scratch record per CPU. A plain array indexed by CPU, not a per-CPU map:
 * per-CPU values are capped at 32 KiB. The loader sets max_entries to the
 * number of possible CPUs.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_buf);
} scratch SEC(".maps");

/*
 * A ring buffer per CPU, at the CPU's index: records of two CPUs never
 * contend for one buffer's lock and producer position. The loader makes
 * the rings (of one size, set at load) and sets max_entries to the number
 * of possible CPUs. Every record carries its sequence number, by which the
 * daemon puts the CPUs' records back in order.
 */
struct ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 10);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ring);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/*
 * comm before exec, saved at task_rename for the exec record. A slot per
 * pid modulo CALLER_SLOTS, tagged with the pid: an array lookup is a few
 * instructions, where a hash update costs ~0.5 us. Two execs whose pids
 * collide in the same microseconds can lose the caller's name (flagged,
 * counted), never mix it up: the reader checks the tag before and after.
 */
struct caller_comm {
	__u32 pid;
	/* The caller's effective ids and capabilities, before exec commits new ones. */
	__u32 euid;
	__u32 egid;
	__u64 cap_permitted;
	char comm[EVENT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CALLER_SLOTS);
	__type(key, __u32);
	__type(value, struct caller_comm);
} caller_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_LIST_MAX);
	__type(key, __u32);
	__type(value, __u8);
} uid_filter SEC(".maps");

struct comm_key {
	char comm[EVENT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_LIST_MAX);
	__type(key, struct comm_key);
	__type(value, __u8);
} comm_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_LIST_MAX);
	__type(key, struct comm_key);
	__type(value, __u8);
} comm_exclude SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cgroup_filter SEC(".maps");

/*
 * cgroup ids whose path the daemon already has (it writes them). Records of
 * other cgroups carry the path, walked here at exec time: a short-lived
 * container's cgroup may be gone by the time the daemon could look.
 * An id sits in one of its two slots (known_slot), so the check is a load
 * or two where a hash map's lookup took 13 to 14% of this program's samples
 * (docs/performance.md, session 15). An id pushed out by others only
 * carries its path again.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KNOWN_CGROUPS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} known_cgroups SEC(".maps");

/*
 * The next sequence number, taken before a record is reserved so that a drop
 * leaves a gap. A map of its own, of a shape that never changes: a restarted
 * or upgraded daemon keeps it, and the numbering carries on.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seq SEC(".maps");

/* Written by the daemon only: what the kept maps hold (struct handover_meta). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handover_meta);
} meta SEC(".maps");

/* Written by the daemon only, as it goes (enum progress_slot); sized at load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} progress SEC(".maps");

/*
 * Written by the daemon only, at load: the layout of its records (struct
 * event_layout_desc), so that a daemon of another layout can translate what
 * this one leaves in the ring buffer. Of a shape that never changes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_layout_desc);
} layout SEC(".maps");

/* This CPU's ring buffer; NULL only if the loader left its slot empty. */
static __always_inline void *this_cpu_ring(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&events, &cpu);
}

static __always_inline __u64 take_seq(void)
{
	__u32 zero = 0;
	__u64 *next = bpf_map_lookup_elem(&seq, &zero);

	/* Never NULL (an array's key 0); the verifier wants the test. */
	return next ? __sync_fetch_and_add(next, 1) : 0;
}

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

#include "path.bpf.h"

/* Non-zero when the filters drop this exec. Cheapest tests first. */
static __always_inline int filtered_out(struct task_struct *task)
{
	if (containers_only && task->group_leader->thread_pid->level == 0)
		return 1;
	if (filter_uids) {
		__u32 uid = task->cred->uid.val;

		if (!bpf_map_lookup_elem(&uid_filter, &uid))
			return 1;
	}
	if (filter_comms || exclude_comms) {
		struct comm_key key = {};

		bpf_get_current_comm(key.comm, sizeof(key.comm));
		if (filter_comms && !bpf_map_lookup_elem(&comm_filter, &key))
			return 1;
		if (exclude_comms && bpf_map_lookup_elem(&comm_exclude, &key))
			return 1;
	}
	if (filter_cgroup && bpf_current_task_under_cgroup(&cgroup_filter, 0) != 1)
		return 1;
	return 0;
}

static __always_inline struct event_buf *scratch_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&scratch, &cpu);
}

/*
 * Fields every record carries. `task` is a trusted BTF pointer (tracepoint
 * argument or bpf_get_current_task_btf), so plain loads work: the verifier
 * turns them into fault-safe loads, far cheaper than a probe-read helper call
 * per field. vmlinux.h marks the types for CO-RE, so offsets are relocated.
 */
static __always_inline void fill_task(struct event *ev, struct task_struct *task)
{
	const struct cred *cred = task->cred;
	struct pid *pid = task->group_leader->thread_pid;
	unsigned int level = pid->level;
	struct upid upid = {};

	ev->kind = EVENT_KIND_EXEC;
	ev->boot_ns = bpf_ktime_get_boot_ns();
	ev->start_ns = task->group_leader->start_boottime;
	ev->parent_start_ns = task->real_parent->group_leader->start_boottime;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->pid = task->tgid;
	ev->ppid = task->real_parent->tgid;
	ev->uid = cred->uid.val;
	ev->gid = cred->gid.val;
	ev->euid = cred->euid.val;
	ev->egid = cred->egid.val;
	if (bpf_core_field_exists(task->loginuid)) {
		ev->auid = task->loginuid.val;
		ev->sessionid = task->sessionid;
	} else {
		ev->auid = (__u32)-1;
		ev->sessionid = (__u32)-1;
	}
	ev->mntns_ino = task->nsproxy->mnt_ns->ns.inum;

	/* The process's number in its innermost pid namespace. */
	if (level == 0) {
		/* host: a constant index, so plain loads */
		ev->ns_pid = pid->numbers[0].nr;
		ev->pidns_ino = pid->numbers[0].ns->ns.inum;
	} else {
		bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]);
		ev->ns_pid = upid.nr;
		ev->pidns_ino = BPF_CORE_READ(upid.ns, ns.inum);
	}
	__builtin_memcpy(ev->comm, task->comm, EVENT_COMM_LEN);
}

#define PF_FORKNOEXEC 0x00000040
/* Nearest ancestors walked to find one that exec'd. */
#define IMAGE_ANCESTORS_MAX 8

/*
 * A parent that never exec'd (a subshell: forked, not exec'd) runs its
 * ancestor's image. Name that ancestor, so the daemon can give the parent's
 * context without a record per fork. The flag is the group leader's:
 * threads are made with it set.
 */
static __always_inline void set_image_ancestor(struct event *ev, struct task_struct *task)
{
	struct task_struct *a = task->real_parent->group_leader;
	int i;

	ev->image_pid = 0;
	ev->image_start_ns = 0;
	if (!(a->flags & PF_FORKNOEXEC))
		return;
	for (i = 0; i < IMAGE_ANCESTORS_MAX; i++) {
		a = a->real_parent->group_leader;
		if (!(a->flags & PF_FORKNOEXEC))
			break;
	}
	ev->image_pid = a->tgid;
	ev->image_start_ns = a->start_boottime;
}

/* Session, group, terminal and start of the process: where it runs. */
static __always_inline void fill_context(struct event *ev, struct task_struct *task)
{
	struct signal_struct *sig = task->signal;
	struct pid *sid = sig->pids[PIDTYPE_SID];
	struct pid *pgid = sig->pids[PIDTYPE_PGID];
	struct tty_struct *tty = sig->tty;

	ev->sid = sid ? sid->numbers[0].nr : 0;
	ev->pgid = pgid ? pgid->numbers[0].nr : 0;
	if (tty) {
		struct tty_driver *drv = tty->driver;

		/* The kernel's own device number: the index alone reads pts/0 as 0. */
		ev->tty_major = drv->major;
		ev->tty_minor = drv->minor_start + tty->index;
	} else {
		ev->tty_major = 0;
		ev->tty_minor = 0;
	}
}

static __always_inline __u32 known_slot(__u64 id, __u32 multiplier)
{
	__u32 folded = (__u32)(id ^ (id >> 32));

	return (folded * multiplier) >> (32 - KNOWN_CGROUPS_BITS);
}

/*
 * Whether the daemon has this cgroup's path; 0 (never an id) is not. A
 * global function, so verified once on its own: inlined, its three ways
 * out multiplied the states of the walks after it past the verifier's limit.
 */
__noinline int cgroup_known(__u64 id)
{
	__u32 a = known_slot(id, KNOWN_CGROUPS_HASH_A);
	__u32 b = known_slot(id, KNOWN_CGROUPS_HASH_B);
	__u64 *v;

	if (!id)
		return 0;
	v = bpf_map_lookup_elem(&known_cgroups, &a);
	if (v && *v == id)
		return 1;
	v = bpf_map_lookup_elem(&known_cgroups, &b);
	return v && *v == id;
}

/* The cgroup path, for a cgroup the daemon does not know yet. */
static __always_inline __u32 write_cgroup(struct event_buf *buf, __u32 base,
					  struct task_struct *task)
{
	struct walk w = {
		.base = base,
		.max = CGROUP_PATH_MAX_LEN,
		.full_flag = EVENT_FLAG_CGROUP_TRUNCATED,
		.fail_flag = EVENT_FLAG_CGROUP_TRUNCATED,
		.fail_stat = STAT_PATH_READ_FAILED,
	};

	if (cgroup_known(buf->ev.cgroup_id))
		return 0;
	buf->ev.flags |= EVENT_FLAG_CGROUP_PATH;
	return write_cgroup_path(buf, &w, task);
}

static __always_inline __u32 write_cwd(struct event_buf *buf, __u32 base,
				       struct fs_struct *fs)
{
	struct walk w = {
		.base = base,
		.max = EXE_PATH_MAX_LEN,
		.full_flag = EVENT_FLAG_CWD_TRUNCATED,
		.fail_flag = EVENT_FLAG_CWD_TRUNCATED,
		.fail_stat = STAT_PATH_READ_FAILED,
		.outside_flag = EVENT_FLAG_CWD_OUTSIDE_ROOT,
	};
	int pseudo;

	if (!fs)
		return 0;
	walk_from_root_of(&w, fs);
	return write_path(buf, &w, fs->pwd.dentry, fs->pwd.mnt, &pseudo);
}

/* The executable: path, inode identity, and where the file came from. */
static __always_inline __u32 write_exe(struct event_buf *buf, __u32 base, struct file *file,
				       struct fs_struct *fs)
{
	struct walk w = {
		.base = base,
		.max = EXE_PATH_MAX_LEN,
		.full_flag = EVENT_FLAG_EXE_TRUNCATED,
		.fail_flag = EVENT_FLAG_EXE_READ_FAILED,
		.fail_stat = STAT_EXE_READ_FAILED,
		.outside_flag = EVENT_FLAG_EXE_OUTSIDE_ROOT,
	};
	struct event *ev = &buf->ev;
	struct inode *inode = file->f_inode;
	__u32 len;
	int pseudo;

	walk_from_root_of(&w, fs);
	len = write_path(buf, &w, file->f_path.dentry, file->f_path.mnt, &pseudo);
	if (pseudo)
		ev->flags |= EVENT_FLAG_EXE_PSEUDO;
	ev->exe_ino = inode->i_ino;
	ev->exe_size = inode->i_size;
	ev->exe_mode = inode->i_mode;
	ev->exe_uid = inode->i_uid.val;
	ev->exe_gid = inode->i_gid.val;
	ev->exe_nlink = inode->i_nlink;
	ev->exe_dev = inode->i_sb->s_dev;
	inode_mtime(inode, &ev->exe_mtime_sec, &ev->exe_mtime_nsec);
	inode_ctime(inode, &ev->exe_ctime_sec, &ev->exe_ctime_nsec);
	if (inode_on_upper_layer(inode))
		ev->flags |= EVENT_FLAG_EXE_UPPER_LAYER;
	if (exe_may_be_fuse(inode))
		ev->flags |= EVENT_FLAG_EXE_FUSE;
	return len;
}

/* A binfmt_misc file passed to its interpreter as an open file (the `O`
 * flag): the kernel keeps it as bprm->executable. A #! script's file is
 * closed by now; the daemon resolves its name (EVENT_FLAG_SCRIPT). */
static __always_inline __u32 write_script(struct event_buf *buf, __u32 base,
					  struct linux_binprm *bprm, struct fs_struct *fs)
{
	struct walk w = {
		.base = base,
		.max = EXE_PATH_MAX_LEN,
		.full_flag = EVENT_FLAG_SCRIPT_TRUNCATED,
		.fail_flag = EVENT_FLAG_SCRIPT_TRUNCATED,
		.fail_stat = STAT_PATH_READ_FAILED,
		.outside_flag = EVENT_FLAG_SCRIPT_OUTSIDE_ROOT,
	};
	struct file *script;
	int pseudo;

	if (!bpf_core_field_exists(bprm->executable))
		return 0;
	script = bprm->executable;
	if (!script || script == bprm->file)
		return 0;
	walk_from_root_of(&w, fs);
	return write_path(buf, &w, script->f_path.dentry, script->f_path.mnt, &pseudo);
}

/*
 * Ring-buffer write with the wakeup policy: wake the reader past a
 * threshold, or for the first exec in a cgroup the daemon does not know (a
 * new container: its runtime's state may be gone soon after it exits). The
 * latter at most once per NEW_CGROUP_WAKEUP_GAP_NS per CPU, so that making
 * cgroups in a loop cannot undo the batching.
 */
static __always_inline void submit(struct event_buf *buf, __u64 size)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	int new_cgroup = 0;

	if ((buf->ev.flags & EVENT_FLAG_CGROUP_PATH) &&
	    buf->ev.boot_ns - buf->cgroup_wakeup_ns >= NEW_CGROUP_WAKEUP_GAP_NS) {
		buf->cgroup_wakeup_ns = buf->ev.boot_ns;
		new_cgroup = 1;
	}
	void *ring = this_cpu_ring();

	if (!ring) {
		stat_inc(STAT_LOST_RINGBUF_FULL);
		return;
	}
	if (new_cgroup || bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wakeup_bytes) {
		flags = BPF_RB_FORCE_WAKEUP;
		stat_inc(STAT_WAKEUPS_FORCED);
	}
	if (bpf_ringbuf_output(ring, buf, size, flags) == 0)
		stat_inc(STAT_SUBMITTED);
	else
		stat_inc(STAT_LOST_RINGBUF_FULL);
}

static __always_inline struct event_buf *begin_record(void)
{
	struct event_buf *buf;

	stat_inc(STAT_SEEN);
	buf = scratch_get();
	if (!buf) {
		take_seq();
		stat_inc(STAT_LOST_NO_SCRATCH);
		return NULL;
	}
	buf->ev.seq = take_seq();
	buf->ev.flags = 0;
	buf->ev.retval = 0;
	buf->ev.dirfd = 0;
	buf->ev.at_flags = 0;
	return buf;
}

/*
 * exec renames the task (begin_new_exec -> __set_task_comm) after de_thread
 * and before commit_creds: task->comm and task->cred are still the caller's;
 * current->pid is already the tgid, as at sched_process_exec. Renames
 * outside exec (prctl) are skipped.
 */
SEC("tp_btf/task_rename")
int BPF_PROG(save_caller, struct task_struct *task, const char *comm)
{
	const struct cred *cred = task->cred;
	struct caller_comm *slot;
	__u32 pid, idx;

	if (!BPF_CORE_READ_BITFIELD(task, in_execve))
		return 0;
	pid = task->pid;
	idx = pid & (CALLER_SLOTS - 1);
	slot = bpf_map_lookup_elem(&caller_comms, &idx);
	if (!slot)
		return 0;
	slot->pid = 0; /* a reader racing with this write sees no match */
	__builtin_memcpy(slot->comm, task->comm, EVENT_COMM_LEN);
	slot->euid = cred->euid.val;
	slot->egid = cred->egid.val;
	slot->cap_permitted = cap_permitted(cred);
	slot->pid = pid;
	return 0;
}

/* Region bounds, so the verifier sees each offset below its region's end. */
#define CGROUP_BASE_MAX (FILENAME_MAX_LEN + EXE_PATH_MAX_LEN)
#define CWD_BASE_MAX (CGROUP_BASE_MAX + CGROUP_PATH_MAX_LEN)
#define SCRIPT_BASE_MAX (CWD_BASE_MAX + EXE_PATH_MAX_LEN)
#define ARGS_BASE_MAX (SCRIPT_BASE_MAX + EXE_PATH_MAX_LEN)

static __always_inline __u32 clamp(__u32 v, __u32 max)
{
	return v > max ? max : v;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_success, struct task_struct *task, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	const struct cred *cred = task->cred;
	struct fs_struct *fs = task->fs;
	struct event_buf *buf;
	struct event *ev;
	struct mm_struct *mm;
	unsigned long arg_start, arg_end;
	__u32 off, len, limit;
	struct caller_comm *saved;
	__u32 pid = task->pid;
	__u32 idx = pid & (CALLER_SLOTS - 1);
	int got_caller = 0;
	long n;

	if (filtered_out(task)) {
		stat_inc(STAT_FILTERED);
		return 0;
	}
	buf = begin_record();
	if (!buf)
		return 0;
	ev = &buf->ev;
	fill_task(ev, task);
	fill_context(ev, task);
	ev->tid = old_pid;
	ev->cap_permitted = cap_permitted(cred);
	set_image_ancestor(ev, task);
	if (BPF_CORE_READ_BITFIELD(bprm, secureexec))
		ev->flags |= EVENT_FLAG_SECUREEXEC;
	if (bprm->interp != bprm->filename)
		ev->flags |= EVENT_FLAG_SCRIPT;

	saved = bpf_map_lookup_elem(&caller_comms, &idx);
	if (saved && MEM_U32(saved->pid) == pid) {
		__builtin_memcpy(ev->caller_comm, saved->comm, EVENT_COMM_LEN);
		ev->old_euid = saved->euid;
		ev->old_egid = saved->egid;
		ev->old_cap_permitted = saved->cap_permitted;
		/* Still ours after the copy: not overwritten meanwhile. */
		got_caller = MEM_U32(saved->pid) == pid;
		saved->pid = 0;
	}
	if (got_caller) {
		ev->flags |= EVENT_FLAG_OLD_CREDS;
	} else {
		ev->old_euid = 0;
		ev->old_egid = 0;
		ev->old_cap_permitted = 0;
		__builtin_memset(ev->caller_comm, 0, EVENT_COMM_LEN);
		ev->flags |= EVENT_FLAG_CALLER_COMM_MISSING;
		stat_inc(STAT_CALLER_COMM_MISSING);
	}

	n = bpf_probe_read_kernel_str(buf->data, FILENAME_MAX_LEN, bprm->filename);
	if (n <= 0) {
		buf->data[0] = 0;
		n = 1;
		stat_inc(STAT_FILENAME_READ_FAILED);
	}
	ev->filename_len = n;
	off = clamp(n, FILENAME_MAX_LEN);
	ev->exe_len = write_exe(buf, off, bprm->file, fs);
	off = clamp(off + ev->exe_len, CGROUP_BASE_MAX);
	ev->cgroup_len = write_cgroup(buf, off, task);
	off = clamp(off + ev->cgroup_len, CWD_BASE_MAX);
	ev->cwd_len = write_cwd(buf, off, fs);
	off = clamp(off + ev->cwd_len, SCRIPT_BASE_MAX);
	ev->script_len = write_script(buf, off, bprm, fs);
	off = clamp(off + ev->script_len, ARGS_BASE_MAX);

	ev->argc = bprm->argc;
	mm = task->mm;
	arg_start = mm->arg_start;
	arg_end = mm->arg_end;
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	ev->args_size = len;
	limit = max_args_bytes;
	if (len > limit) {
		len = limit;
		ev->flags |= EVENT_FLAG_ARGS_TRUNCATED;
	}
	len = clamp(len, ARGS_MAX_LIMIT);
	if (len && bpf_probe_read_user(&buf->data[off], len, (void *)arg_start)) {
		len = 0;
		ev->flags |= EVENT_FLAG_ARGS_READ_FAILED;
		stat_inc(STAT_ARGS_READ_FAILED);
	}
	ev->args_len = len;
	off = clamp(off + len, ARGS_BASE_MAX + ARGS_MAX_LIMIT);

	ev->env_len = 0;
	if (capture_env) {
		unsigned long env_start = mm->env_start, env_end = mm->env_end;

		len = env_end > env_start ? env_end - env_start : 0;
		if (len > ENV_MAX_LEN) {
			len = ENV_MAX_LEN;
			ev->flags |= EVENT_FLAG_ENV_TRUNCATED;
		}
		if (len && bpf_probe_read_user(&buf->data[off], len, (void *)env_start))
			len = 0;
		ev->env_len = len;
		off += len;
	}

	submit(buf, sizeof(struct event) + off);
	return 0;
}

/* A failed exec: the caller's memory still holds filename and argv. */
static __always_inline void record_failed_exec(const char *filename_ptr,
					       const char *const *argv, long ret,
					       __u32 syscall_flag, int dirfd,
					       __u32 at_flags)
{
	struct task_struct *task = (void *)bpf_get_current_task_btf();
	struct event_buf *buf;
	struct event *ev;
	__u32 off, start, limit, i;
	long n;

	if (filtered_out(task)) {
		stat_inc(STAT_FILTERED);
		return;
	}
	buf = begin_record();
	if (!buf)
		return;
	ev = &buf->ev;
	fill_task(ev, task);
	fill_context(ev, task);
	ev->tid = (__u32)bpf_get_current_pid_tgid();
	ev->retval = ret;
	ev->flags |= syscall_flag;
	ev->dirfd = dirfd;
	ev->at_flags = at_flags;
	/* Nothing was executed: caller and current comm are the same. */
	__builtin_memcpy(ev->caller_comm, ev->comm, EVENT_COMM_LEN);
	/* Nothing ran: no executable, no new credentials (the scratch record
	 * is reused, so every field this path does not set is cleared). */
	ev->exe_len = 0;
	ev->script_len = 0;
	ev->env_len = 0;
	ev->exe_ino = 0;
	ev->exe_size = 0;
	ev->exe_mtime_sec = 0;
	ev->exe_ctime_sec = 0;
	ev->exe_mtime_nsec = 0;
	ev->exe_ctime_nsec = 0;
	ev->exe_dev = 0;
	ev->exe_nlink = 0;
	ev->exe_uid = 0;
	ev->exe_gid = 0;
	ev->exe_mode = 0;
	ev->old_euid = 0;
	ev->old_egid = 0;
	ev->old_cap_permitted = 0;
	ev->cap_permitted = 0;

	n = bpf_probe_read_user_str(buf->data, FILENAME_MAX_LEN, filename_ptr);
	if (n <= 0) {
		buf->data[0] = 0;
		n = 1;
		stat_inc(STAT_FILENAME_READ_FAILED);
	} else if (n == FILENAME_MAX_LEN) {
		ev->flags |= EVENT_FLAG_FILENAME_TRUNCATED;
	}
	ev->filename_len = n;
	start = clamp(n, FILENAME_MAX_LEN);
	ev->cgroup_len = write_cgroup(buf, start, task);
	start = clamp(start + ev->cgroup_len, CWD_BASE_MAX);
	ev->cwd_len = write_cwd(buf, start, task->fs);
	start = clamp(start + ev->cwd_len, ARGS_BASE_MAX);
	limit = clamp(max_args_bytes, ARGS_MAX_LIMIT);
	MEM_U32(ev->args_len) = 0;

	for (i = 0; i < FAILED_ARGV_MAX; i++) {
		const char *arg = NULL;
		__u32 room;

		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i])) {
			ev->flags |= EVENT_FLAG_ARGS_READ_FAILED;
			stat_inc(STAT_ARGS_READ_FAILED);
			break;
		}
		if (!arg)
			break;
		off = MEM_U32(ev->args_len);
		if (off >= limit) {
			ev->flags |= EVENT_FLAG_ARGS_TRUNCATED;
			continue; /* keep counting argc */
		}
		room = clamp(limit - off, ARGS_MAX_LIMIT);
		n = bpf_probe_read_user_str(&buf->data[start + off], room, arg);
		if (n <= 0) {
			ev->flags |= EVENT_FLAG_ARGS_READ_FAILED;
			stat_inc(STAT_ARGS_READ_FAILED);
			break;
		}
		/* A string that filled `room` exactly may have been cut. */
		if ((__u32)n == room)
			ev->flags |= EVENT_FLAG_ARGS_TRUNCATED;
		MEM_U32(ev->args_len) = off + n;
	}
	if (i == FAILED_ARGV_MAX)
		ev->flags |= EVENT_FLAG_ARGS_TRUNCATED;
	off = clamp(MEM_U32(ev->args_len), ARGS_MAX_LIMIT);
	ev->argc = i;
	ev->args_size = off;
	ev->args_len = off;
	submit(buf, sizeof(struct event) + start + off);
}

/* A header-only record straight in the ring buffer (no scratch copy). */
static __always_inline struct event *reserve_header(void *ring)
{
	struct event *ev = bpf_ringbuf_reserve(ring, sizeof(*ev), 0);

	if (ev)
		__builtin_memset(ev, 0, sizeof(*ev));
	return ev;
}

static __always_inline void submit_header(void *ring, struct event *ev)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) >= wakeup_bytes) {
		flags = BPF_RB_FORCE_WAKEUP;
		stat_inc(STAT_WAKEUPS_FORCED);
	}
	bpf_ringbuf_submit(ev, flags);
}

#define PF_KTHREAD 0x00200000
#define SIGNAL_GROUP_EXIT 0x00000004

/*
 * A process ends when its last thread exits: signal->live has just dropped
 * to 0 (do_exit decrements it before this tracepoint). Reported for a
 * process that exec'd, and for one already running when execwatch started;
 * a fork that never exec'd makes no event.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(process_exit, struct task_struct *task)
{
	struct signal_struct *sig = task->signal;
	struct event *ev;
	__u64 start, seq;
	void *ring;

	if (sig->live.counter != 0 || (task->flags & PF_KTHREAD))
		return 0;
	start = task->group_leader->start_boottime;
	/* The leader's flag: every thread is made with PF_FORKNOEXEC set. */
	if ((task->group_leader->flags & PF_FORKNOEXEC) && start >= started_ns)
		return 0;
	if (filtered_out(task)) {
		stat_inc(STAT_FILTERED);
		return 0;
	}
	stat_inc(STAT_SEEN);
	/* Like exec records: the number is taken first, so a drop leaves a gap. */
	seq = take_seq();

	ring = this_cpu_ring();
	ev = ring ? reserve_header(ring) : NULL;
	if (!ev) {
		stat_inc(STAT_LOST_RINGBUF_FULL);
		return 0;
	}
	fill_task(ev, task);
	fill_context(ev, task);
	ev->kind = EVENT_KIND_EXIT;
	ev->seq = seq;
	ev->tid = task->pid;
	ev->exit_status = (sig->flags & SIGNAL_GROUP_EXIT) ? sig->group_exit_code
							    : task->exit_code;
	submit_header(ring, ev);
	stat_inc(STAT_SUBMITTED);
	return 0;
}


#if defined(__TARGET_ARCH_x86)
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
/* 32-bit tasks use other numbers (11 is munmap here): skip them. */
#define TS_COMPAT 0x0002
#define IS_COMPAT(task) (BPF_CORE_READ(task, thread_info.status) & TS_COMPAT)
#elif defined(__TARGET_ARCH_arm64)
#define NR_EXECVE 221
#define NR_EXECVEAT 281
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, syscallno)
/* 32-bit (AArch32) tasks: 221 and 281 are fcntl64 and socket there. */
#define TIF_32BIT 22
#define IS_COMPAT(task) (BPF_CORE_READ(task, thread_info.flags) & (1UL << TIF_32BIT))
#else
#error "execwatch: syscall numbers for this architecture are not known"
#endif

/* execve(filename, argv, envp) */
static __always_inline void record_failed_execve(struct pt_regs *regs, long ret)
{
	record_failed_exec((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
		     (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs), ret, 0,
		     0, 0);
}

/* execveat(dirfd, filename, argv, envp, flags) */
static __always_inline void record_failed_execveat(struct pt_regs *regs, long ret)
{
	record_failed_exec((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
		     (const char *const *)PT_REGS_PARM3_CORE_SYSCALL(regs), ret,
		     EVENT_FLAG_SYSCALL_EXECVEAT,
		     (int)PT_REGS_PARM1_CORE_SYSCALL(regs),
		     (__u32)PT_REGS_PARM5_CORE_SYSCALL(regs));
}

/*
 * Failed execs, first choice: the execve/execveat exit tracepoints. The
 * program runs for these two syscalls only. Needs tracefs (the loader
 * mounts it) and bpf_task_pt_regs (5.15). The user registers still hold the
 * syscall's arguments; compat tasks never reach these tracepoints.
 */
SEC("tp/syscalls/sys_exit_execve")
int exec_failed_execve(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	if (ret < 0)
		record_failed_execve((struct pt_regs *)bpf_task_pt_regs(
				      bpf_get_current_task_btf()),
			      ret);
	return 0;
}

SEC("tp/syscalls/sys_exit_execveat")
int exec_failed_execveat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	if (ret < 0)
		record_failed_execveat((struct pt_regs *)bpf_task_pt_regs(
					bpf_get_current_task_btf()),
				ret);
	return 0;
}

/*
 * Failed execs, fallback without tracefs: the raw sys_exit tracepoint runs
 * for every syscall, so the common case (a non-negative return) leaves at
 * the first test.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(exec_failed_sys_exit, struct pt_regs *regs, long ret)
{
	long nr;

	if (ret >= 0)
		return 0;
	nr = SYSCALL_NR(regs);
	if (nr != NR_EXECVE && nr != NR_EXECVEAT)
		return 0;
	if (IS_COMPAT(bpf_get_current_task_btf()))
		return 0;
	if (nr == NR_EXECVE)
		record_failed_execve(regs, ret);
	else
		record_failed_execveat(regs, ret);
	return 0;
}

/*
 * Dispatchers: the only programs attached. Each runs the implementation in
 * slot 0 of its one-slot program array, so a restarted daemon swaps in its
 * own implementation with one map update: every exec runs exactly one of
 * the two (no gap, no duplicate), and the attachment itself never changes.
 * Their names, sections and arrays are a fixed interface between releases
 * (docs/design.md, "Restart and upgrade"); an empty slot records nothing.
 */
#define HOOK_ARRAY(name)                                                       \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);                         \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, __u32);                                          \
	} name SEC(".maps")

HOOK_ARRAY(hook_rename);
HOOK_ARRAY(hook_exec);
HOOK_ARRAY(hook_sysexit);
HOOK_ARRAY(hook_fexecve);
HOOK_ARRAY(hook_fexecat);
HOOK_ARRAY(hook_exit);

SEC("tp_btf/task_rename")
int dispatch_rename(void *ctx)
{
	bpf_tail_call(ctx, &hook_rename, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int dispatch_exec(void *ctx)
{
	bpf_tail_call(ctx, &hook_exec, 0);
	return 0;
}

SEC("tp_btf/sys_exit")
int dispatch_sysexit(void *ctx)
{
	bpf_tail_call(ctx, &hook_sysexit, 0);
	return 0;
}

SEC("tp/syscalls/sys_exit_execve")
int dispatch_fexecve(void *ctx)
{
	bpf_tail_call(ctx, &hook_fexecve, 0);
	return 0;
}

SEC("tp/syscalls/sys_exit_execveat")
int dispatch_fexecat(void *ctx)
{
	bpf_tail_call(ctx, &hook_fexecat, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int dispatch_exit(void *ctx)
{
	bpf_tail_call(ctx, &hook_exit, 0);
	return 0;
}
