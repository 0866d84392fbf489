/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel-version shims: one place for every field that moved or changed
 * shape between the kernels execwatch runs on (5.12 and newer). Each shim
 * names the kernel that changed it; CO-RE picks the right branch at load.
 * Both sides of each change are local flavours (`___new`, `___preNN`), so
 * the code builds against any kernel's vmlinux.h, old or new: build.rs
 * compiles it for each architecture's header.
 */
#ifndef EXECWATCH_CORE_FIXES_BPF_H
#define EXECWATCH_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* kernfs_node.parent became __parent in 6.14. */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));

struct kernfs_node___pre614 {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	struct kernfs_node___new *kn_new = (void *)kn;

	if (bpf_core_field_exists(kn_new->__parent))
		return BPF_CORE_READ(kn_new, __parent);
	return BPF_CORE_READ((struct kernfs_node___pre614 *)kn, parent);
}

/* Inode times: a timespec64 each before 6.6; ctime became __i_ctime in 6.6
 * and mtime __i_mtime in 6.7; split into *_sec and *_nsec in 6.11. */
struct inode___new {
	__s64 i_mtime_sec;
	__u32 i_mtime_nsec;
	__s64 i_ctime_sec;
	__u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

struct inode___pre611 {
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___pre67 {
	struct timespec64 i_mtime;
} __attribute__((preserve_access_index));

struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

static __always_inline void inode_mtime(struct inode *inode, __s64 *sec, __u32 *nsec)
{
	struct inode___new *in = (void *)inode;
	struct timespec64 ts = {};

	if (bpf_core_field_exists(in->i_mtime_sec)) {
		*sec = BPF_CORE_READ(in, i_mtime_sec);
		*nsec = BPF_CORE_READ(in, i_mtime_nsec);
		return;
	}
	if (bpf_core_field_exists(((struct inode___pre611 *)inode)->__i_mtime))
		ts = BPF_CORE_READ((struct inode___pre611 *)inode, __i_mtime);
	else
		ts = BPF_CORE_READ((struct inode___pre67 *)inode, i_mtime);
	*sec = ts.tv_sec;
	*nsec = ts.tv_nsec;
}

#define I_CTIME_QUERIED (1U << 31)

static __always_inline void inode_ctime(struct inode *inode, __s64 *sec, __u32 *nsec)
{
	struct inode___new *in = (void *)inode;
	struct timespec64 ts = {};

	if (bpf_core_field_exists(in->i_ctime_sec)) {
		*sec = BPF_CORE_READ(in, i_ctime_sec);
		/* Since 6.13 the top bit marks a queried ctime (multigrain). */
		*nsec = BPF_CORE_READ(in, i_ctime_nsec) & ~I_CTIME_QUERIED;
		return;
	}
	if (bpf_core_field_exists(((struct inode___pre611 *)inode)->__i_ctime))
		ts = BPF_CORE_READ((struct inode___pre611 *)inode, __i_ctime);
	else
		ts = BPF_CORE_READ((struct inode___pre66 *)inode, i_ctime);
	*sec = ts.tv_sec;
	*nsec = ts.tv_nsec;
}

/* overlayfs: the inode execwatch sees is the overlay's; its upper dentry is
 * set once the file lives on the writable layer. overlay may be a module
 * (its BTF then lives in /sys/kernel/btf/overlay) or absent. */
#define OVERLAYFS_SUPER_MAGIC 0x794c7630

struct ovl_inode___local {
	struct inode vfs_inode;
	struct dentry *__upperdentry;
} __attribute__((preserve_access_index));

static __always_inline int inode_on_upper_layer(struct inode *inode)
{
	struct ovl_inode___local *oi;

	if (!bpf_core_type_exists(struct ovl_inode___local))
		return 0;
	if (BPF_CORE_READ(inode, i_sb, s_magic) != OVERLAYFS_SUPER_MAGIC)
		return 0;
	oi = (void *)inode - bpf_core_field_offset(struct ovl_inode___local, vfs_inode);
	return BPF_CORE_READ(oi, __upperdentry) != NULL;
}

#define FUSE_SUPER_MAGIC 0x65735546

/* overlayfs's layers (upper first, then lower and data-only ones): since
 * 5.7 an array of `numlayer` struct ovl_layer, each starting with the
 * layer's private mount. */
struct ovl_layer___local {
	struct vfsmount *mnt;
} __attribute__((preserve_access_index));

struct ovl_fs___local {
	unsigned int numlayer;
	struct ovl_layer___local *layers;
} __attribute__((preserve_access_index));

/* Whether an overlayfs super block (by address) may give a FUSE server's
 * bytes: a layer on FUSE, a layer stacked once more (checked by `inner`),
 * more layers than checked, a read that fails (an overlayfs has the upper
 * slot and at least one lower layer), or a layout this kernel's BTF does
 * not show (overlay loaded as a module after the program).
 * The whole file system is judged, not the layer the file sits on: no
 * mapping or per-file state to be misled by, at the price of flagging
 * every file of an overlay with any FUSE layer. */
#define OVERLAY_ON_FUSE(name, inner)                                               \
	__noinline int name(__u64 sb_addr)                                         \
	{                                                                          \
		struct super_block *sb = (void *)sb_addr;                          \
		struct ovl_fs___local *ofs;                                        \
		struct ovl_layer___local *layers;                                  \
		__u32 n, i, stride = bpf_core_type_size(struct ovl_layer___local); \
                                                                                   \
		if (!bpf_core_type_exists(struct ovl_fs___local) ||                \
		    !bpf_core_field_exists(struct ovl_fs___local, layers) ||       \
		    BPF_CORE_READ(sb, s_magic) != OVERLAYFS_SUPER_MAGIC)           \
			return 1;                                                  \
		ofs = BPF_CORE_READ(sb, s_fs_info);                                \
		n = BPF_CORE_READ(ofs, numlayer);                                  \
		layers = BPF_CORE_READ(ofs, layers);                               \
		if (!layers || n < 2 || n > OVERLAY_LAYERS_MAX)                    \
			return 1;                                                  \
		for (i = 0; i < OVERLAY_LAYERS_MAX; i++) {                         \
			struct ovl_layer___local *l;                               \
			struct super_block *lsb;                                   \
                                                                                   \
			if (i >= n)                                                \
				break;                                             \
			l = (void *)layers + i * stride;                           \
			lsb = BPF_CORE_READ(l, mnt, mnt_sb);                       \
			if (!lsb) {                                                \
				if (i == 0) /* no upper layer */                   \
					continue;                                  \
				return 1; /* unreadable: cannot tell */            \
			}                                                          \
			if (BPF_CORE_READ(lsb, s_magic) == FUSE_SUPER_MAGIC)       \
				return 1;                                          \
			if (BPF_CORE_READ(lsb, s_stack_depth) && inner((__u64)lsb)) \
				return 1;                                          \
		}                                                                  \
		return 0;                                                          \
	}

/* The kernel stacks file systems at most two deep: a layer of a layer is
 * not stacked again; were it, it would count as FUSE. */
static __always_inline int stacked_too_deep(__u64 sb_addr)
{
	return 1;
}

OVERLAY_ON_FUSE(lower_overlay_on_fuse, stacked_too_deep)
OVERLAY_ON_FUSE(overlay_on_fuse, lower_overlay_on_fuse)

/* Whether the bytes of the file that runs may come from a FUSE server. Most
 * execs pay one load and two compares; a stacked file system (overlayfs:
 * containers) a walk over its layers. Another stacking file system
 * (ecryptfs) counts as FUSE: its lower file is not followed. */
static __always_inline int exe_may_be_fuse(struct inode *inode)
{
	struct super_block *sb = inode->i_sb;

	if (sb->s_magic == FUSE_SUPER_MAGIC)
		return 1;
	if (!sb->s_stack_depth)
		return 0;
	/* A global function takes numbers: the address, read as one. */
	return overlay_on_fuse((__u64)BPF_CORE_READ(inode, i_sb));
}

/* kernel_cap_t: two u32 words before 6.3, one u64 since. */
struct kernel_cap_t___new {
	__u64 val;
} __attribute__((preserve_access_index));

struct cred___new {
	struct kernel_cap_t___new cap_permitted;
} __attribute__((preserve_access_index));

struct kernel_cap_struct___pre63 {
	__u32 cap[2];
} __attribute__((preserve_access_index));

struct cred___pre63 {
	struct kernel_cap_struct___pre63 cap_permitted;
} __attribute__((preserve_access_index));

static __always_inline __u64 cap_permitted(const struct cred *cred)
{
	const struct cred___new *now = (const void *)cred;
	struct cred___pre63 *old = (void *)cred;

	if (bpf_core_field_exists(now->cap_permitted.val))
		return now->cap_permitted.val; /* a plain load: no helper call */
	return BPF_CORE_READ(old, cap_permitted.cap[0]) |
	       ((__u64)BPF_CORE_READ(old, cap_permitted.cap[1]) << 32);
}

#endif /* EXECWATCH_CORE_FIXES_BPF_H */
