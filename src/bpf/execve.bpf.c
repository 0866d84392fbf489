// SPDX-License-Identifier: GPL-2.0
/*
 * execwatch: one ring-buffer record per exec.
 *
 * Successful execs are taken at tp_btf/sched_process_exec, after the new
 * image is in place: argv is read from the new mm in one bounded copy (what
 * really ran, whatever syscall or thread started it), the executable from
 * bprm->file. Failed execs are taken at tp_btf/sys_exit, where only a negative
 * return of execve/execveat is recorded. None of these hooks needs tracefs
 * (fentry/fexit would, on some hosts, be refused: see docs/design.md).
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

struct event_buf {
	struct event ev;
	__u8 data[EVENT_DATA_MAX];
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

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
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
#define CALLER_SLOTS 16384

struct caller_comm {
	__u32 pid;
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
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u8);
} uid_filter SEC(".maps");

struct comm_key {
	char comm[EVENT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct comm_key);
	__type(value, __u8);
} comm_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
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
 * cgroup ids whose path the daemon already has (it adds them). Records of
 * other cgroups carry the path, walked here at exec time: a short-lived
 * container's cgroup may be gone by the time the daemon could look.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
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

/*
 * Running offsets live in the record (map memory), not in registers: the
 * verifier then sees the same state at every loop iteration and can prune,
 * instead of exploring every combination of offset ranges.
 */
#define MEM_U32(x) (*(volatile __u32 *)&(x))

/*
 * Append one path component at data[base + written] (the running length is
 * in ev.args_len, see MEM_U32), at most `max` bytes in all. Non-zero: stop.
 */
static __always_inline int put_component(struct event_buf *buf, __u32 base,
					 const void *name, __u32 max,
					 __u32 full_flag, __u32 fail_flag)
{
	__u32 len = MEM_U32(buf->ev.args_len);
	long n;

	if (len > max - EXE_COMPONENT_MAX) {
		buf->ev.flags |= full_flag;
		return 1;
	}
	n = bpf_probe_read_kernel_str(&buf->data[base + len], EXE_COMPONENT_MAX,
				      name);
	if (n <= 0) {
		buf->ev.flags |= fail_flag;
		if (fail_flag == EVENT_FLAG_EXE_READ_FAILED)
			stat_inc(STAT_EXE_READ_FAILED);
		return 1;
	}
	MEM_U32(buf->ev.args_len) = len + n;
	return 0;
}

#define PUT_EXE_COMPONENT(buf, base, name)                                     \
	put_component(buf, base, name, EXE_PATH_MAX_LEN,                       \
		      EVENT_FLAG_EXE_TRUNCATED, EVENT_FLAG_EXE_READ_FAILED)

/*
 * Write the path of `file` as NUL-ended components, leaf first, up to the
 * root of its mount namespace (bpf_d_path is not allowed at this hook). The
 * length ends up in ev.exe_len (ev.args_len is the running offset).
 */
static __always_inline void write_exe_path(struct event_buf *buf, __u32 base,
					   struct file *file)
{
	struct dentry *dentry = file->f_path.dentry;
	struct vfsmount *vfsmnt = file->f_path.mnt;
	struct dentry *root = vfsmnt->mnt_root;
	struct mount *mnt;
	struct dentry *d;
	int i;

	if (base > FILENAME_MAX_LEN)
		base = FILENAME_MAX_LEN;
	MEM_U32(buf->ev.args_len) = 0;

	/* Inside the file's own mount the pointers are typed: plain loads. */
	for (i = 0; i < EXE_PATH_MAX_DEPTH; i++) {
		struct dentry *parent = dentry->d_parent;

		if (dentry == root || dentry == parent)
			break;
		if (PUT_EXE_COMPONENT(buf, base, dentry->d_name.name))
			goto done;
		dentry = parent;
	}
	if (i == EXE_PATH_MAX_DEPTH) {
		buf->ev.flags |= EVENT_FLAG_EXE_TRUNCATED;
		goto done;
	}
	if (dentry != root)
		goto done; /* a disconnected dentry: nothing above it */

	/* Parent mounts: container_of leaves no type, so probe reads. */
	mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	d = dentry;
	for (i = 0; i < EXE_PATH_MAX_DEPTH; i++) {
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		struct dentry *parent = BPF_CORE_READ(d, d_parent);

		if (d == mnt_root || d == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (d != mnt_root || mnt_parent == mnt)
				goto done; /* reached the namespace root */
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			continue;
		}
		if (PUT_EXE_COMPONENT(buf, base, BPF_CORE_READ(d, d_name.name)))
			goto done;
		d = parent;
	}
	buf->ev.flags |= EVENT_FLAG_EXE_TRUNCATED;
done:
	buf->ev.exe_len = MEM_U32(buf->ev.args_len);
}

/* kernfs_node.parent became __parent in 6.14. */
struct kernfs_node___pre614 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return BPF_CORE_READ(kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___pre614 *)kn, parent);
}

/*
 * For a cgroup the daemon does not know yet, write the cgroup v2 path as
 * components leaf first at data[base...]; sets ev.cgroup_len.
 */
static __always_inline void write_cgroup_path(struct event_buf *buf, __u32 base,
					      struct task_struct *task)
{
	struct kernfs_node *kn;
	int i;

	buf->ev.cgroup_len = 0;
	if (bpf_map_lookup_elem(&known_cgroups, &buf->ev.cgroup_id))
		return;
	buf->ev.flags |= EVENT_FLAG_CGROUP_PATH;
	if (base > FILENAME_MAX_LEN + EXE_PATH_MAX_LEN)
		base = FILENAME_MAX_LEN + EXE_PATH_MAX_LEN;
	MEM_U32(buf->ev.args_len) = 0;
	kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	for (i = 0; i < CGROUP_PATH_MAX_DEPTH; i++) {
		struct kernfs_node *parent = kn_parent(kn);

		if (!kn || !parent)
			goto done; /* the root has no parent and no name */
		if (put_component(buf, base, BPF_CORE_READ(kn, name),
				  CGROUP_PATH_MAX_LEN, EVENT_FLAG_CGROUP_TRUNCATED,
				  EVENT_FLAG_CGROUP_TRUNCATED))
			goto done;
		kn = parent;
	}
	buf->ev.flags |= EVENT_FLAG_CGROUP_TRUNCATED;
done:
	buf->ev.cgroup_len = MEM_U32(buf->ev.args_len);
}

/* Ring-buffer write with the wakeup policy: wake the reader only past a threshold. */
static __always_inline void submit(struct event_buf *buf, __u64 size)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes) {
		flags = BPF_RB_FORCE_WAKEUP;
		stat_inc(STAT_WAKEUPS_FORCED);
	}
	if (bpf_ringbuf_output(&events, buf, size, flags) == 0)
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
 * exec renames the task (begin_new_exec -> __set_task_comm) after de_thread,
 * while task->comm still holds the old name; current->pid is already the
 * tgid, as at sched_process_exec. Renames outside exec (prctl) are skipped.
 */
SEC("tp_btf/task_rename")
int BPF_PROG(save_caller_comm, struct task_struct *task, const char *comm)
{
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
	slot->pid = pid;
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_success, struct task_struct *task, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	struct event_buf *buf;
	struct event *ev;
	struct mm_struct *mm;
	unsigned long arg_start, arg_end;
	__u32 off, len, limit;
	struct caller_comm *saved;
	__u32 pid = task->pid;
	__u32 idx = pid & (CALLER_SLOTS - 1);
	int got_caller = 0;
	const char *filename;
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
	ev->tid = old_pid;

	saved = bpf_map_lookup_elem(&caller_comms, &idx);
	if (saved && MEM_U32(saved->pid) == pid) {
		__builtin_memcpy(ev->caller_comm, saved->comm, EVENT_COMM_LEN);
		/* Still ours after the copy: not overwritten meanwhile. */
		got_caller = MEM_U32(saved->pid) == pid;
		saved->pid = 0;
	}
	if (!got_caller) {
		__builtin_memset(ev->caller_comm, 0, EVENT_COMM_LEN);
		ev->flags |= EVENT_FLAG_CALLER_COMM_MISSING;
		stat_inc(STAT_CALLER_COMM_MISSING);
	}

	filename = bprm->filename;
	n = bpf_probe_read_kernel_str(buf->data, FILENAME_MAX_LEN, filename);
	if (n <= 0) {
		buf->data[0] = 0;
		n = 1;
		stat_inc(STAT_FILENAME_READ_FAILED);
	}
	off = n;
	ev->filename_len = n;

	write_exe_path(buf, off, bprm->file);
	off += ev->exe_len;
	write_cgroup_path(buf, off, task);
	off += ev->cgroup_len;

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
	if (len > ARGS_MAX_LIMIT)
		len = ARGS_MAX_LIMIT;
	if (off > FILENAME_MAX_LEN + EXE_PATH_MAX_LEN + CGROUP_PATH_MAX_LEN)
		off = FILENAME_MAX_LEN + EXE_PATH_MAX_LEN + CGROUP_PATH_MAX_LEN;
	if (len && bpf_probe_read_user(&buf->data[off], len, (void *)arg_start)) {
		len = 0;
		ev->flags |= EVENT_FLAG_ARGS_READ_FAILED;
		stat_inc(STAT_ARGS_READ_FAILED);
	}
	ev->args_len = len;

	submit(buf, sizeof(struct event) + off + len);
	return 0;
}

/* A failed exec: the caller's memory still holds filename and argv. */
static __always_inline void exec_failure(const char *filename_ptr,
					 const char *const *argv, long ret,
					 __u32 syscall_flag, int dirfd, __u32 at_flags)
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
	ev->tid = (__u32)bpf_get_current_pid_tgid();
	ev->retval = ret;
	ev->flags |= syscall_flag;
	ev->dirfd = dirfd;
	ev->at_flags = at_flags;
	/* Nothing was executed: caller and current comm are the same. */
	__builtin_memcpy(ev->caller_comm, ev->comm, EVENT_COMM_LEN);
	ev->exe_len = 0;

	n = bpf_probe_read_user_str(buf->data, FILENAME_MAX_LEN, filename_ptr);
	if (n <= 0) {
		buf->data[0] = 0;
		n = 1;
		stat_inc(STAT_FILENAME_READ_FAILED);
	} else if (n == FILENAME_MAX_LEN) {
		ev->flags |= EVENT_FLAG_FILENAME_TRUNCATED;
	}
	ev->filename_len = n;
	start = n;
	if (start > FILENAME_MAX_LEN)
		start = FILENAME_MAX_LEN;
	write_cgroup_path(buf, start, task);
	start += ev->cgroup_len;
	if (start > FILENAME_MAX_LEN + CGROUP_PATH_MAX_LEN)
		start = FILENAME_MAX_LEN + CGROUP_PATH_MAX_LEN;
	limit = max_args_bytes;
	if (limit > ARGS_MAX_LIMIT)
		limit = ARGS_MAX_LIMIT;
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
		room = limit - off;
		if (room > ARGS_MAX_LIMIT)
			room = ARGS_MAX_LIMIT;
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
	off = MEM_U32(ev->args_len);
	if (off > ARGS_MAX_LIMIT)
		off = ARGS_MAX_LIMIT;
	ev->argc = i;
	ev->args_size = off;
	ev->args_len = off;
	submit(buf, sizeof(struct event) + start + off);
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
#define IS_COMPAT(task) 0
#else
#error "execwatch: syscall numbers for this architecture are not known"
#endif

static __always_inline void failed_execve(struct pt_regs *regs, long ret)
{
	exec_failure((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
		     (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs), ret, 0,
		     0, 0);
}

static __always_inline void failed_execveat(struct pt_regs *regs, long ret)
{
	exec_failure((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
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
		failed_execve((struct pt_regs *)bpf_task_pt_regs(
				      bpf_get_current_task_btf()),
			      ret);
	return 0;
}

SEC("tp/syscalls/sys_exit_execveat")
int exec_failed_execveat(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;

	if (ret < 0)
		failed_execveat((struct pt_regs *)bpf_task_pt_regs(
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
int BPF_PROG(exec_failed, struct pt_regs *regs, long ret)
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
		failed_execve(regs, ret);
	else
		failed_execveat(regs, ret);
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
