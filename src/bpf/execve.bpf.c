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

/* Set by the loader before load(). */
const volatile __u32 max_args_bytes = ARGS_DEFAULT_LIMIT;
/* Force a reader wakeup once this many bytes wait in the ring buffer. */
const volatile __u64 wakeup_bytes = 1 << 20;

/* Next sequence number; taken before a record is reserved, so a drop leaves a gap. */
__u64 next_seq = 0;

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

/* comm of the caller, saved at begin_new_exec, keyed by the calling tid. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, char[EVENT_COMM_LEN]);
} caller_comms SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct event_buf *scratch_get(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&scratch, &cpu);
}

/* Fields every record carries, read from the current task. */
static __always_inline void fill_task(struct event *ev, struct task_struct *task)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);
	struct pid *pid;
	unsigned int level;
	struct upid upid = {};

	ev->kind = EVENT_KIND_EXEC;
	ev->boot_ns = bpf_ktime_get_boot_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->pid = BPF_CORE_READ(task, tgid);
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->uid = BPF_CORE_READ(cred, uid.val);
	ev->gid = BPF_CORE_READ(cred, gid.val);
	ev->euid = BPF_CORE_READ(cred, euid.val);
	ev->egid = BPF_CORE_READ(cred, egid.val);
	if (bpf_core_field_exists(task->loginuid)) {
		ev->auid = BPF_CORE_READ(task, loginuid.val);
		ev->sessionid = BPF_CORE_READ(task, sessionid);
	} else {
		ev->auid = (__u32)-1;
		ev->sessionid = (__u32)-1;
	}
	ev->mntns_ino = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);

	/* The process's pid struct, and its number in the innermost pid ns. */
	pid = BPF_CORE_READ(task, group_leader, thread_pid);
	level = BPF_CORE_READ(pid, level);
	bpf_core_read(&upid, sizeof(upid), &pid->numbers[level]);
	ev->ns_pid = upid.nr;
	ev->pidns_ino = BPF_CORE_READ(upid.ns, ns.inum);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
}

/*
 * Running offsets live in the record (map memory), not in registers: the
 * verifier then sees the same state at every loop iteration and can prune,
 * instead of exploring every combination of offset ranges.
 */
#define MEM_U32(x) (*(volatile __u32 *)&(x))

/*
 * Write the path of `file` as NUL-ended components, leaf first, from the
 * root of its mount namespace (bpf_d_path is not allowed at this hook).
 * Components go to data[base ...]; the length ends up in ev.exe_len.
 */
static __always_inline void write_exe_path(struct event_buf *buf, __u32 base,
					   struct file *file)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	int i;

	if (base > FILENAME_MAX_LEN)
		base = FILENAME_MAX_LEN;
	MEM_U32(buf->ev.args_len) = 0; /* scratch: bytes of path written */
	for (i = 0; i < EXE_PATH_MAX_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		const unsigned char *name;
		__u32 len;
		long n;

		if (dentry == mnt_root || dentry == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (dentry != mnt_root || mnt_parent == mnt)
				goto done; /* reached the root */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			continue;
		}
		len = MEM_U32(buf->ev.args_len);
		if (len > EXE_PATH_MAX_LEN - EXE_COMPONENT_MAX) {
			buf->ev.flags |= EVENT_FLAG_EXE_TRUNCATED;
			goto done;
		}
		name = BPF_CORE_READ(dentry, d_name.name);
		n = bpf_probe_read_kernel_str(
			&buf->data[base + len],
			EXE_COMPONENT_MAX, name);
		if (n <= 0) {
			buf->ev.flags |= EVENT_FLAG_EXE_READ_FAILED;
			stat_inc(STAT_EXE_READ_FAILED);
			goto done;
		}
		MEM_U32(buf->ev.args_len) = len + n;
		dentry = parent;
	}
	buf->ev.flags |= EVENT_FLAG_EXE_TRUNCATED;
done:
	buf->ev.exe_len = MEM_U32(buf->ev.args_len);
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
		__sync_fetch_and_add(&next_seq, 1);
		stat_inc(STAT_LOST_NO_SCRATCH);
		return NULL;
	}
	buf->ev.seq = __sync_fetch_and_add(&next_seq, 1);
	buf->ev.flags = 0;
	buf->ev.retval = 0;
	buf->ev.dirfd = 0;
	buf->ev.at_flags = 0;
	return buf;
}

/*
 * exec renames the task (begin_new_exec -> __set_task_comm) after de_thread,
 * so current->pid is already the tgid here, as at sched_process_exec. Other
 * renames (prctl) leave an entry that the next exec's rename overwrites.
 */
SEC("tp_btf/task_rename")
int BPF_PROG(save_caller_comm, struct task_struct *task, const char *comm)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	char old[EVENT_COMM_LEN];

	BPF_CORE_READ_STR_INTO(&old, task, comm);
	bpf_map_update_elem(&caller_comms, &pid, old, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_success, struct task_struct *task, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	struct event_buf *buf = begin_record();
	struct event *ev;
	struct mm_struct *mm;
	unsigned long arg_start, arg_end;
	__u32 off, len, limit;
	__u32 pid = BPF_CORE_READ(task, pid);
	const char *filename;
	char *saved;
	long n;

	if (!buf)
		return 0;
	ev = &buf->ev;
	fill_task(ev, task);
	ev->tid = old_pid;

	saved = bpf_map_lookup_elem(&caller_comms, &pid);
	if (saved) {
		__builtin_memcpy(ev->caller_comm, saved, EVENT_COMM_LEN);
		bpf_map_delete_elem(&caller_comms, &pid);
	} else {
		__builtin_memset(ev->caller_comm, 0, EVENT_COMM_LEN);
		ev->flags |= EVENT_FLAG_CALLER_COMM_MISSING;
		stat_inc(STAT_CALLER_COMM_MISSING);
	}

	filename = BPF_CORE_READ(bprm, filename);
	n = bpf_probe_read_kernel_str(buf->data, FILENAME_MAX_LEN, filename);
	if (n <= 0) {
		buf->data[0] = 0;
		n = 1;
		stat_inc(STAT_FILENAME_READ_FAILED);
	}
	off = n;
	ev->filename_len = n;

	write_exe_path(buf, off, BPF_CORE_READ(bprm, file));
	off += ev->exe_len;

	ev->argc = BPF_CORE_READ(bprm, argc);
	mm = BPF_CORE_READ(task, mm);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	len = arg_end > arg_start ? arg_end - arg_start : 0;
	ev->args_size = len;
	limit = max_args_bytes;
	if (len > limit) {
		len = limit;
		ev->flags |= EVENT_FLAG_ARGS_TRUNCATED;
	}
	if (len > ARGS_MAX_LIMIT)
		len = ARGS_MAX_LIMIT;
	if (off > FILENAME_MAX_LEN + EXE_PATH_MAX_LEN)
		off = FILENAME_MAX_LEN + EXE_PATH_MAX_LEN;
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

/*
 * Failed execs. sys_exit runs for every syscall, so the common case (a
 * non-negative return) leaves at the first test. The user registers still
 * hold the syscall's arguments.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(exec_failed, struct pt_regs *regs, long ret)
{
	struct task_struct *task;
	long nr;

	if (ret >= 0)
		return 0;
	nr = SYSCALL_NR(regs);
	if (nr != NR_EXECVE && nr != NR_EXECVEAT)
		return 0;
	task = bpf_get_current_task_btf();
	if (IS_COMPAT(task))
		return 0;
	if (nr == NR_EXECVE)
		exec_failure((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
			     (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			     ret, 0, 0, 0);
	else
		exec_failure((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			     (const char *const *)PT_REGS_PARM3_CORE_SYSCALL(regs),
			     ret, EVENT_FLAG_SYSCALL_EXECVEAT,
			     (int)PT_REGS_PARM1_CORE_SYSCALL(regs),
			     (__u32)PT_REGS_PARM5_CORE_SYSCALL(regs));
	return 0;
}
