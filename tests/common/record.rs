// One encoder of ring-buffer records, shared by the decoder's unit and
// property tests (src/decode.rs), the benches and the integration tests.
// Included with `include!` into a module that has `types` (the skeleton's
// generated types) in scope.

/// A record under construction: the header and each data region.
#[derive(Clone, Default)]
pub struct Record {
    pub header: types::event,
    pub filename: Vec<u8>,
    pub exe: Vec<u8>,
    pub cgroup: Vec<u8>,
    pub cwd: Vec<u8>,
    pub script: Vec<u8>,
    pub args: Vec<u8>,
    pub env: Vec<u8>,
}

impl Record {
    /// A successful exec of `args` (argc set), no flags, loginuid unset.
    pub fn exec(args: &[&[u8]]) -> Record {
        let mut r = Record {
            header: types::event {
                kind: types::event_kind::EVENT_KIND_EXEC.0,
                auid: u32::MAX,
                sessionid: u32::MAX,
                ..Default::default()
            },
            ..Default::default()
        };
        r.set_args(args);
        r
    }

    /// argv as the kernel lays it out: each argument NUL-ended.
    pub fn set_args(&mut self, args: &[&[u8]]) -> &mut Record {
        self.args.clear();
        for a in args {
            self.args.extend_from_slice(a);
            self.args.push(0);
        }
        self.header.argc = args.len() as u32;
        self.header.args_size = self.args.len() as u32;
        self
    }

    /// A path as the BPF walker writes it: components leaf first, NUL-ended.
    pub fn path(path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for c in path.split('/').filter(|c| !c.is_empty()).rev() {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out
    }

    pub fn flag(&mut self, f: types::event_flag) -> &mut Record {
        self.header.flags |= f.0;
        self
    }

    /// The bytes, with every length in the header set from the regions.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = self.header;
        h.filename_len = self.filename.len() as u16;
        h.exe_len = self.exe.len() as u16;
        h.cgroup_len = self.cgroup.len() as u16;
        h.cwd_len = self.cwd.len() as u16;
        h.script_len = self.script.len() as u16;
        h.args_len = self.args.len() as u32;
        h.env_len = self.env.len() as u32;
        self.encode_raw(&h)
    }

    /// The bytes with the header exactly as given (lengths unchecked).
    pub fn encode_raw(&self, h: &types::event) -> Vec<u8> {
        let size = std::mem::size_of::<types::event>();
        // SAFETY: `types::event` is the skeleton's `#[repr(C)]` plain-old-data
        // copy of `struct event` (integers and integer arrays, no padding
        // holes read as anything else); viewing it as bytes is sound.
        let header = unsafe { std::slice::from_raw_parts((h as *const types::event).cast::<u8>(), size) };
        let mut out = header.to_vec();
        for region in [
            &self.filename,
            &self.exe,
            &self.cgroup,
            &self.cwd,
            &self.script,
            &self.args,
            &self.env,
        ] {
            out.extend_from_slice(region);
        }
        out
    }
}
