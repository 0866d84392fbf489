/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Path walkers: a file's path up to the process's root directory, and a
 * task's cgroup v2 path up to the hierarchy's root. Both write NUL-ended
 * components, leaf first, into the record's data at a base offset (the
 * daemon reverses them); bpf_d_path is not allowed at these hooks.
 *
 * Needs, from the including file: struct event_buf (with `walk_len`, the
 * walkers' running offset), stat_inc() and the EVENT_* enums.
 */
#ifndef EXECWATCH_PATH_BPF_H
#define EXECWATCH_PATH_BPF_H

#include "core_fixes.bpf.h"

/*
 * Running offsets live in map memory, not in registers: the verifier then
 * sees the same state at every loop iteration and can prune, instead of
 * exploring every combination of offset ranges.
 */
#define MEM_U32(x) (*(volatile __u32 *)&(x))

/* Where a walk writes, how much it may write, what to flag, where it stops. */
struct walk {
	__u32 base;      /* offset in buf->data */
	__u32 max;       /* bytes at most */
	__u32 full_flag; /* set when the path is cut */
	__u32 fail_flag; /* set when a component cannot be read */
	__u32 fail_stat; /* counted then */
	__u32 outside_flag; /* set when the walk passes the root without meeting it */
	/* The process's root directory (fs->root): its chroot, or the root of
	 * its mount namespace. Paths are as the process sees them. */
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
};

/* Stop `w` at the root directory of `fs` (the task's, read once per
 * record). The loads are fault-safe: a task without an fs reads NULLs,
 * which match nothing (walked to the top). */
static __always_inline void walk_from_root_of(struct walk *w, struct fs_struct *fs)
{
	w->root_dentry = fs->root.dentry;
	w->root_mnt = fs->root.mnt;
}

/* Append one component at data[base + walk_len]. Non-zero: stop. */
static __always_inline int put_component(struct event_buf *buf, const struct walk *w,
					 const void *name)
{
	__u32 len = MEM_U32(buf->walk_len);
	long n;

	if (len > w->max - EXE_COMPONENT_MAX) {
		buf->ev.flags |= w->full_flag;
		return 1;
	}
	n = bpf_probe_read_kernel_str(&buf->data[w->base + len], EXE_COMPONENT_MAX, name);
	if (n <= 0) {
		buf->ev.flags |= w->fail_flag;
		stat_inc(w->fail_stat);
		return 1;
	}
	MEM_U32(buf->walk_len) = len + n;
	return 0;
}

/*
 * Write the path of (dentry, vfsmnt) up to the process's root directory
 * (w->root_*), or the root of its mount namespace when the file lies outside
 * it; returns the bytes written. A dentry that is its own parent from the start
 * (memfd, anonymous files) writes its name alone and sets `pseudo`.
 * Both pointers must be typed BTF pointers: inside their own mount the walk
 * uses plain loads, far cheaper than a probe-read helper call each.
 */
static __always_inline __u32 write_path(struct event_buf *buf, const struct walk *w,
					struct dentry *dentry, struct vfsmount *vfsmnt,
					int *pseudo)
{
	struct dentry *root = vfsmnt->mnt_root;
	struct mount *mnt, *root_mnt;
	struct dentry *d;
	int i;

	MEM_U32(buf->walk_len) = 0;
	*pseudo = 0;
	if (dentry != root && dentry == dentry->d_parent) {
		*pseudo = 1;
		put_component(buf, w, dentry->d_name.name);
		goto done;
	}
	for (i = 0; i < EXE_PATH_MAX_DEPTH; i++) {
		struct dentry *parent = dentry->d_parent;

		if (dentry == root || dentry == parent ||
		    (dentry == w->root_dentry && vfsmnt == w->root_mnt))
			break;
		if (put_component(buf, w, dentry->d_name.name))
			goto done;
		dentry = parent;
	}
	/* At the process's root: done, and the parent mounts, which cost more
	 * than the rest of the walk (cold lines), are not read. */
	if (dentry == w->root_dentry && vfsmnt == w->root_mnt)
		goto done;
	/* Exactly that deep is whole: cut only if something is left above. */
	if (i == EXE_PATH_MAX_DEPTH && dentry != root && dentry != dentry->d_parent) {
		buf->ev.flags |= w->full_flag;
		goto done;
	}
	if (dentry != root)
		goto done; /* a disconnected dentry: nothing above it */

	/* Parent mounts: container_of leaves no type, so probe reads. */
	mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	root_mnt = (void *)w->root_mnt - bpf_core_field_offset(struct mount, mnt);
	d = dentry;
	for (i = 0; i < EXE_PATH_MAX_DEPTH; i++) {
		struct dentry *mnt_root, *parent;

		if (d == w->root_dentry && mnt == root_mnt)
			goto done; /* a mount above reached the process's root */
		mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
		parent = BPF_CORE_READ(d, d_parent);
		if (d == mnt_root || d == parent) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (d != mnt_root || mnt_parent == mnt) {
				/* The namespace root: the process's root was not on the
				 * way, so this path is not one the process can name. */
				if (d == mnt_root && w->root_dentry)
					buf->ev.flags |= w->outside_flag;
				goto done;
			}
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			continue;
		}
		if (put_component(buf, w, BPF_CORE_READ(d, d_name.name)))
			goto done;
		d = parent;
	}
	/* Out of iterations: whole only at the process's or namespace's root. */
	if (d == w->root_dentry && mnt == root_mnt)
		goto done;
	if (d != BPF_CORE_READ(mnt, mnt.mnt_root) || BPF_CORE_READ(mnt, mnt_parent) != mnt)
		buf->ev.flags |= w->full_flag;
done:
	return MEM_U32(buf->walk_len);
}

/* The cgroup v2 path of `task`, like write_path; the root cgroup has none. */
static __always_inline __u32 write_cgroup_path(struct event_buf *buf, const struct walk *w,
					       struct task_struct *task)
{
	struct kernfs_node *kn = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn);
	int i;

	MEM_U32(buf->walk_len) = 0;
	for (i = 0; i < CGROUP_PATH_MAX_DEPTH; i++) {
		struct kernfs_node *parent = kn_parent(kn);

		if (!kn || !parent)
			goto done; /* the root has no parent and no name */
		if (put_component(buf, w, BPF_CORE_READ(kn, name)))
			goto done;
		kn = parent;
	}
	/* Exactly that deep is whole: cut only if kn is not the root. */
	if (kn && kn_parent(kn))
		buf->ev.flags |= w->full_flag;
done:
	return MEM_U32(buf->walk_len);
}

#endif /* EXECWATCH_PATH_BPF_H */
