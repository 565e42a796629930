//! A safe, non-executing reader for the subset of Python's pickle format that
//! `torch.save` writes (protocol 2, plus the few protocol-4 opcodes newer
//! writers emit).
//!
//! The interpreter never imports or calls anything. It builds a flat value
//! tree (an arena of [`Node`]s addressed by [`NodeId`]):
//!
//! * `GLOBAL` / `STACK_GLOBAL` only produce a [`Node::Global`] record: a name.
//! * A *call* (`REDUCE`) of a global on the caller's allow-list produces a
//!   [`Node::Call`] record (function + argument tuple) that the caller may
//!   interpret; a call of any other global is refused *by name*, and so is every
//!   `INST` and `OBJ`. `collections.OrderedDict` directly yields a [`Node::Dict`]
//!   so that `SETITEM(S)` can fill it.
//! * Objects that are only *constructed* (`NEWOBJ`/`NEWOBJ_EX`, or a call of
//!   `copyreg._reconstructor`), whatever their class, become inert
//!   [`Node::Object`] records (class name, arguments, and the state `BUILD`
//!   gives them): a training checkpoint's config object is data.
//! * Pure data that pickles as calls reads as values ([`DATA_CALLS`]): NumPy
//!   scalars (NumPy 1 and 2) with their `numpy.dtype` and the
//!   `_codecs.encode(text, 'latin1')` that carries their bytes, builtin
//!   `set`/`frozenset` (as lists) and `complex` (as a `(real, imag)` tuple).
//! * `BINPERSID` produces a [`Node::PersistentId`] record wrapping the id value.
//! * `BUILD` on a dict or a call record ignores the state (an `OrderedDict`'s
//!   state is its `_metadata`, which a weights reader does not need).
//!
//! Because values live in an arena, deeply nested or even self-referencing
//! structures (a list appended to itself) cannot overflow the native stack,
//! neither while parsing nor when the tree is dropped. Resource use is
//! bounded by [`Limits`]; see its fields for the exact bounds.

use std::collections::HashMap;
use std::fmt;

/// Index of a node inside a [`Tree`].
pub type NodeId = usize;

/// One value of the pickle value tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// Python `None`.
    None,
    /// Python `bool`.
    Bool(bool),
    /// Python `int` (only values that fit in an `i64` are accepted).
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `str`.
    Str(String),
    /// Python `bytes`.
    Bytes(Vec<u8>),
    /// Python `tuple`.
    Tuple(Vec<NodeId>),
    /// Python `list`.
    List(Vec<NodeId>),
    /// Python `dict` / `collections.OrderedDict`, in insertion order.
    /// Duplicate keys are kept as they appear; consumers resolve them.
    Dict(Vec<(NodeId, NodeId)>),
    /// A reference to an allow-listed global, e.g. `torch._utils._rebuild_tensor_v2`.
    Global {
        /// Module part, e.g. `torch._utils`.
        module: String,
        /// Attribute part, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A `REDUCE` that was recorded, not executed: `func(*args)`.
    Call {
        /// The callee, always a [`Node::Global`].
        func: NodeId,
        /// The argument tuple, always a [`Node::Tuple`].
        args: NodeId,
    },
    /// A `BINPERSID` record: the persistent id value (for PyTorch, a tuple
    /// `('storage', StorageType, key, location, numel)`).
    PersistentId(NodeId),
    /// An object that the pickle only constructs (`NEWOBJ`, `NEWOBJ_EX`,
    /// `copyreg._reconstructor`), recorded and never built: its class (a
    /// [`Node::Global`]), its constructor arguments (a [`Node::Tuple`]) and the
    /// state a `BUILD` gave it (`None` before one).
    Object {
        /// The class, a [`Node::Global`].
        class: NodeId,
        /// The arguments, a [`Node::Tuple`].
        args: NodeId,
        /// The `BUILD` state (usually the attribute dict).
        state: Option<NodeId>,
    },
}

/// Calls that pickle pure data, read as values instead of being refused.
pub const DATA_CALLS: &[&str] = &[
    "copyreg._reconstructor",
    "_codecs.encode",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "builtins.set",
    "builtins.frozenset",
    "builtins.complex",
    "argparse.Namespace",
];

impl Node {
    /// Short Python-ish name of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::None => "None",
            Node::Bool(_) => "bool",
            Node::Int(_) => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::Tuple(_) => "tuple",
            Node::List(_) => "list",
            Node::Dict(_) => "dict",
            Node::Global { .. } => "global",
            Node::Call { .. } => "call record",
            Node::PersistentId(_) => "persistent id",
            Node::Object { .. } => "object record",
        }
    }
}

/// Resource bounds for [`parse`]. Exceeding any of them is an error
/// ([`PickleError::LimitExceeded`]), never a crash or an unbounded allocation.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted pickle, in bytes (default 256 MiB; a state-dict pickle
    /// is normally a few KiB to a few MiB).
    pub max_input_bytes: usize,
    /// Most values on the stack at once (default 1,000,000).
    pub max_stack: usize,
    /// Deepest `MARK` nesting, i.e. nesting depth of tuples/lists/dicts built
    /// with `MARK` (default 10,000).
    pub max_mark_depth: usize,
    /// Most memo entries (default 1,000,000).
    pub max_memo: usize,
    /// Most values created in total (default 16,000,000).
    pub max_nodes: usize,
    /// Most bytes the values may hold: the arena, strings, the items of
    /// tuples, lists and dicts, and the memo (default 64 MiB). Counts alone
    /// do not bound memory: a million-pair dict copied by `OrderedDict(d)`
    /// once per 6-byte opcode stays under every count and takes gigabytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 256 << 20,
            max_stack: 1_000_000,
            max_mark_depth: 10_000,
            max_memo: 1_000_000,
            max_nodes: 16_000_000,
            max_bytes: crate::checkpoint::DEFAULT_MEMORY_BUDGET_BYTES as usize,
        }
    }
}

/// What went wrong while reading a pickle. Every message names the problem,
/// where it happened (byte offset inside the pickle) and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// The data ends in the middle of an opcode, or before `STOP`.
    #[error("pickle is truncated at byte {offset} (while reading {what}); the file is incomplete or corrupted: copy or download it again")]
    Truncated {
        /// Byte offset where more data was needed.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// An opcode this reader does not implement (or that is not a pickle opcode at all).
    #[error("unsupported pickle opcode 0x{opcode:02x}{} at byte {offset}; only the protocol-2 subset that torch.save writes is understood: re-save the weights with torch.save(model.state_dict(), path) or convert them to safetensors", opcode_label(*.opcode))]
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its byte offset.
        offset: usize,
    },
    /// A call (`REDUCE`, `INST`, `OBJ`) of a global outside the allow-list.
    // The allow-list itself is in docs/SECURITY.md: printed here it would
    // bury the one name that matters in a kilobyte of names.
    #[error("pickle global '{name}' is refused: the pickle calls it, and nothing outside the allow-list (docs/SECURITY.md) is called; do not torch.load this file: re-export the state dict with torch.save(model.state_dict(), path) or use safetensors")]
    GlobalNotAllowed {
        /// `module.name` as written in the file (control characters escaped, long names shortened).
        name: String,
    },
    /// The pickle protocol version is unknown.
    #[error("pickle protocol {version} is not supported (0 to 5 are); re-save the checkpoint with torch.save")]
    UnsupportedProtocol {
        /// Version byte after `PROTO`.
        version: u8,
    },
    /// An opcode needed more stack values than were available (above the current `MARK`).
    #[error("malformed pickle: {opcode} at byte {offset} needs more values than are on the stack; the file is corrupted: re-export it")]
    StackUnderflow {
        /// Opcode name.
        opcode: &'static str,
        /// Its byte offset.
        offset: usize,
    },
    /// An opcode that consumes a `MARK` found none.
    #[error("malformed pickle: {opcode} at byte {offset} has no matching MARK; the file is corrupted: re-export it")]
    MissingMark {
        /// Opcode name.
        opcode: &'static str,
        /// Its byte offset.
        offset: usize,
    },
    /// A memo read of an index that was never written.
    #[error("malformed pickle: memo entry {index} read at byte {offset} was never stored; the file is corrupted: re-export it")]
    BadMemo {
        /// Memo index.
        index: u32,
        /// Byte offset of the read.
        offset: usize,
    },
    /// An opcode was applied to a value of the wrong kind.
    #[error("malformed or unsupported pickle: {opcode} at byte {offset} expects {expected} but found {found}; re-save the weights with torch.save(model.state_dict(), path) or convert them to safetensors")]
    TypeMismatch {
        /// Opcode name.
        opcode: &'static str,
        /// Its byte offset.
        offset: usize,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A string is not valid UTF-8.
    #[error("malformed pickle: invalid UTF-8 text at byte {offset}; the file is corrupted: re-export it")]
    InvalidUtf8 {
        /// Byte offset of the string data.
        offset: usize,
    },
    /// An integer does not fit in 64 bits.
    #[error("pickle integer at byte {offset} does not fit in 64 bits; a weights checkpoint never needs such values: re-export it")]
    IntegerTooLarge {
        /// Byte offset of the opcode.
        offset: usize,
    },
    /// The values would hold more than [`Limits::max_bytes`].
    #[error("pickle values would take {needed} bytes at byte {offset}, over the limit of {limit}; a state-dict pickle never needs this much, so the file is malformed or hostile: re-export it")]
    MemoryExceeded {
        /// Bytes the values would have held.
        needed: usize,
        /// The limit.
        limit: usize,
        /// Byte offset of the opcode that would have passed it.
        offset: usize,
    },
    /// One of the [`Limits`] was exceeded.
    #[error("pickle exceeds the {what} limit of {limit} at byte {offset}; a state-dict pickle never needs this much, so the file is malformed or hostile: re-export it")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The limit's value.
        limit: usize,
        /// Byte offset where it was hit.
        offset: usize,
    },
}

/// The value tree built by [`parse`].
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    root: NodeId,
    bytes: usize,
}

/// Returned by [`Tree::node`] for an id that does not belong to the tree.
static NONE_NODE: Node = Node::None;

impl Tree {
    /// The value returned by `STOP`.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The node with this id (`Node::None` for an id not from this tree).
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&NONE_NODE)
    }

    /// Number of nodes in the arena.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Bytes the values hold, as counted against [`Limits::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the arena is empty (never true for a parsed tree).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The string value of `id`, if it is a `str`.
    pub fn as_str(&self, id: NodeId) -> Option<&str> {
        match self.node(id) {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer value of `id`, if it is an `int` (or a `bool`).
    pub fn as_int(&self, id: NodeId) -> Option<i64> {
        match self.node(id) {
            Node::Int(v) => Some(*v),
            Node::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The numeric value of `id` as `f64`, if it is a `float` or an `int`.
    pub fn as_f64(&self, id: NodeId) -> Option<f64> {
        match self.node(id) {
            Node::Float(v) => Some(*v),
            Node::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The items of `id`, if it is a `tuple`.
    pub fn as_tuple(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.node(id) {
            Node::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The items of `id`, if it is a `tuple` or a `list`.
    pub fn as_sequence(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.node(id) {
            Node::Tuple(items) | Node::List(items) => Some(items),
            _ => None,
        }
    }

    /// The `(key, value)` pairs of `id`, if it is a dict.
    pub fn as_dict(&self, id: NodeId) -> Option<&[(NodeId, NodeId)]> {
        match self.node(id) {
            Node::Dict(pairs) => Some(pairs),
            _ => None,
        }
    }

    /// `module.name` of `id`, if it is a global.
    pub fn global_name(&self, id: NodeId) -> Option<String> {
        match self.node(id) {
            Node::Global { module, name } => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// `module.name` of the class of `id`, if it is an object record.
    pub fn class_name(&self, id: NodeId) -> Option<String> {
        match self.node(id) {
            Node::Object { class, .. } => self.global_name(*class),
            _ => None,
        }
    }

    /// The named fields of `id`: a dict's pairs, or an object record's attribute
    /// dict (its `BUILD` state, or the dict of a `(dict, slots)` state).
    pub fn fields(&self, id: NodeId) -> Option<&[(NodeId, NodeId)]> {
        match self.node(id) {
            Node::Dict(pairs) => Some(pairs),
            Node::Object { state: Some(state), .. } => match self.node(*state) {
                Node::Dict(pairs) => Some(pairs),
                Node::Tuple(items) => items.first().and_then(|&d| self.as_dict(d)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value of field `key` of `id` ([`Tree::fields`]; the last one if the
    /// key repeats).
    pub fn field(&self, id: NodeId, key: &str) -> Option<NodeId> {
        self.fields(id)?.iter().rev().find(|(k, _)| self.as_str(*k) == Some(key)).map(|(_, v)| *v)
    }

    /// The value stored under the string key `key` in dict `id` (the last
    /// one if the key repeats, as Python would keep).
    pub fn dict_get(&self, id: NodeId, key: &str) -> Option<NodeId> {
        self.as_dict(id)?.iter().rev().find(|(k, _)| self.as_str(*k) == Some(key)).map(|(_, v)| *v)
    }
}

/// Parses `data` as a pickle without executing anything.
///
/// `allowed_globals` lists the `module.name` globals the pickle may call
/// (besides [`DATA_CALLS`]); a call of any other global is refused with
/// [`PickleError::GlobalNotAllowed`].
pub fn parse(data: &[u8], allowed_globals: &[&str], limits: &Limits) -> Result<Tree, PickleError> {
    if data.len() > limits.max_input_bytes {
        return Err(PickleError::LimitExceeded { what: "input size", limit: limits.max_input_bytes, offset: 0 });
    }
    Machine {
        data,
        pos: 0,
        op_start: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        bytes: 0,
        limits,
        allowed: allowed_globals,
    }
    .run()
}

// Opcodes (names as in CPython's pickletools).
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const BINUNICODE: u8 = b'X';
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const EMPTY_LIST: u8 = b']';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const SHORT_BINUNICODE: u8 = 0x8c;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const NEWOBJ: u8 = 0x81;
const NEWOBJ_EX: u8 = 0x92;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const INST: u8 = b'i';
const OBJ: u8 = b'o';
const FRAME: u8 = 0x95;

/// Name of a known pickle opcode (supported or not), for error messages.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

fn opcode_label(op: u8) -> String {
    match opcode_name(op) {
        Some(name) => format!(" ({name})"),
        None => String::new(),
    }
}

/// Shortens and escapes an untrusted name for display (short enough that
/// the whole message stays one readable line).
fn display_name(module: &str, name: &str) -> String {
    const MAX: usize = 64;
    let full = crate::untrusted::shown(&format!("{module}.{name}"));
    let mut out: String = full.chars().take(MAX).collect();
    if full.chars().nth(MAX).is_some() {
        out.push_str("...");
    }
    out
}

/// Bytes a node holds outside the arena slot itself.
fn heap_bytes(node: &Node) -> usize {
    use std::mem::size_of;
    match node {
        Node::Str(s) => s.capacity(),
        Node::Bytes(b) => b.capacity(),
        Node::Tuple(v) | Node::List(v) => v.capacity().saturating_mul(size_of::<NodeId>()),
        Node::Dict(p) => p.capacity().saturating_mul(size_of::<(NodeId, NodeId)>()),
        Node::Global { module, name } => module.capacity().saturating_add(name.capacity()),
        Node::None
        | Node::Bool(_)
        | Node::Int(_)
        | Node::Float(_)
        | Node::Call { .. }
        | Node::PersistentId(_)
        | Node::Object { .. } => 0,
    }
}

/// Bytes one memo entry is counted as (key, value and the hash table's share).
const MEMO_ENTRY_BYTES: usize = 32;

/// `bytes + more`, the bytes counted once `more` are, or [`PickleError::MemoryExceeded`]
/// (at `offset`) if that passes `limit`.
fn counted_within(bytes: usize, more: usize, limit: usize, offset: usize) -> Result<usize, PickleError> {
    let needed = bytes.saturating_add(more);
    if needed > limit {
        return Err(PickleError::MemoryExceeded { needed, limit, offset });
    }
    Ok(needed)
}

/// Makes room in `v` for `more` items, counting the growth on `bytes`
/// against `limit` *before* the allocation (growth doubles, as `Vec` does,
/// but exactly: the counted capacity is the one reserved).
fn reserve_within<T>(
    v: &mut Vec<T>,
    more: usize,
    bytes: &mut usize,
    limit: usize,
    offset: usize,
) -> Result<(), PickleError> {
    let need = v.len().saturating_add(more);
    if need <= v.capacity() {
        return Ok(());
    }
    let new_cap = need.max(v.capacity().saturating_mul(2));
    let grown = (new_cap - v.capacity()).saturating_mul(std::mem::size_of::<T>());
    let total = counted_within(*bytes, grown, limit, offset)?;
    v.reserve_exact(new_cap - v.len());
    *bytes = total;
    Ok(())
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed (for error messages).
    op_start: usize,
    nodes: Vec<Node>,
    stack: Vec<NodeId>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, NodeId>,
    /// Bytes the values hold (see [`Limits::max_bytes`]).
    bytes: usize,
    limits: &'a Limits,
    allowed: &'a [&'a str],
}

impl<'a> Machine<'a> {
    fn run(mut self) -> Result<Tree, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.read_u8("an opcode")?;
            match op {
                PROTO => {
                    let version = self.read_u8("PROTO version")?;
                    if version > 5 {
                        return Err(PickleError::UnsupportedProtocol { version });
                    }
                }
                FRAME => {
                    // Framing only groups opcodes for buffered reading; the
                    // data is already in memory, so the frame length is skipped.
                    self.take(8, "FRAME length")?;
                }
                STOP => {
                    let root = self.pop("STOP")?;
                    return Ok(Tree { nodes: self.nodes, root, bytes: self.bytes });
                }
                MARK => {
                    if self.marks.len() >= self.limits.max_mark_depth {
                        return Err(self.limit("MARK nesting depth", self.limits.max_mark_depth));
                    }
                    self.marks.push(self.stack.len());
                }
                NONE => self.push_new(Node::None)?,
                NEWTRUE => self.push_new(Node::Bool(true))?,
                NEWFALSE => self.push_new(Node::Bool(false))?,
                BININT => {
                    let b = self.take_array::<4>("BININT")?;
                    self.push_new(Node::Int(i64::from(i32::from_le_bytes(b))))?;
                }
                BININT1 => {
                    let v = self.read_u8("BININT1")?;
                    self.push_new(Node::Int(i64::from(v)))?;
                }
                BININT2 => {
                    let b = self.take_array::<2>("BININT2")?;
                    self.push_new(Node::Int(i64::from(u16::from_le_bytes(b))))?;
                }
                LONG1 => {
                    let n = usize::from(self.read_u8("LONG1 length")?);
                    let bytes = self.take(n, "LONG1 bytes")?;
                    let v = decode_long(bytes).ok_or(PickleError::IntegerTooLarge { offset: self.op_start })?;
                    self.push_new(Node::Int(v))?;
                }
                BINFLOAT => {
                    let b = self.take_array::<8>("BINFLOAT")?;
                    self.push_new(Node::Float(f64::from_be_bytes(b)))?;
                }
                BINUNICODE => {
                    let n = u32::from_le_bytes(self.take_array::<4>("BINUNICODE length")?);
                    let s = self.read_str(n as usize, "BINUNICODE text")?;
                    self.push_new(Node::Str(s))?;
                }
                SHORT_BINUNICODE => {
                    let n = self.read_u8("SHORT_BINUNICODE length")?;
                    let s = self.read_str(usize::from(n), "SHORT_BINUNICODE text")?;
                    self.push_new(Node::Str(s))?;
                }
                BINBYTES => {
                    let n = u32::from_le_bytes(self.take_array::<4>("BINBYTES length")?);
                    let b = self.take(n as usize, "BINBYTES data")?.to_vec();
                    self.push_new(Node::Bytes(b))?;
                }
                SHORT_BINBYTES => {
                    let n = self.read_u8("SHORT_BINBYTES length")?;
                    let b = self.take(usize::from(n), "SHORT_BINBYTES data")?.to_vec();
                    self.push_new(Node::Bytes(b))?;
                }
                EMPTY_DICT => self.push_new(Node::Dict(Vec::new()))?,
                EMPTY_LIST => self.push_new(Node::List(Vec::new()))?,
                EMPTY_TUPLE => self.push_new(Node::Tuple(Vec::new()))?,
                TUPLE => {
                    let items = self.pop_mark("TUPLE")?;
                    self.push_new(Node::Tuple(items))?;
                }
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(op - TUPLE1 + 1);
                    let name = ["TUPLE1", "TUPLE2", "TUPLE3"][n - 1];
                    let items = self.pop_n(n, name)?;
                    self.push_new(Node::Tuple(items))?;
                }
                GLOBAL => {
                    let module = self.read_line("GLOBAL module")?;
                    let name = self.read_line("GLOBAL name")?;
                    self.push_global(module, name)?;
                }
                STACK_GLOBAL => {
                    let name_id = self.pop("STACK_GLOBAL")?;
                    let module_id = self.pop("STACK_GLOBAL")?;
                    let name = self.string_of(name_id, "STACK_GLOBAL")?;
                    let module = self.string_of(module_id, "STACK_GLOBAL")?;
                    self.push_global(module, name)?;
                }
                BINPERSID => {
                    let pid = self.pop("BINPERSID")?;
                    self.push_new(Node::PersistentId(pid))?;
                }
                REDUCE => self.reduce()?,
                NEWOBJ | NEWOBJ_EX => {
                    let name = if op == NEWOBJ { "NEWOBJ" } else { "NEWOBJ_EX" };
                    if op == NEWOBJ_EX {
                        self.pop(name)?; // keyword arguments: recorded objects are never built
                    }
                    let args = self.pop(name)?;
                    let class = self.pop(name)?;
                    self.push_object(class, args, name)?;
                }
                INST => {
                    let module = self.read_line("INST module")?;
                    let name = self.read_line("INST name")?;
                    return Err(PickleError::GlobalNotAllowed { name: display_name(&module, &name) });
                }
                OBJ => {
                    let items = self.pop_mark("OBJ")?;
                    let class = items.first().copied().unwrap_or(usize::MAX);
                    return Err(match self.node(class) {
                        Node::Global { module, name } => {
                            PickleError::GlobalNotAllowed { name: display_name(module, name) }
                        }
                        other => self.mismatch("OBJ", "a class", other.kind()),
                    });
                }
                EMPTY_SET => self.push_new(Node::List(Vec::new()))?,
                ADDITEMS => {
                    let items = self.pop_mark("ADDITEMS")?;
                    self.extend_list(items, "ADDITEMS")?;
                }
                FROZENSET => {
                    let items = self.pop_mark("FROZENSET")?;
                    self.push_new(Node::List(items))?;
                }
                BUILD => {
                    let state = self.pop("BUILD")?;
                    let target = self.peek("BUILD")?;
                    match self.nodes.get_mut(target) {
                        Some(Node::Object { state: slot, .. }) => *slot = Some(state),
                        // OrderedDict state (`_metadata`) and tensor state carry
                        // nothing a weights reader needs: ignore them.
                        Some(Node::Dict(_) | Node::Call { .. }) => {}
                        other => {
                            let found = other.map_or("nothing", |n| n.kind());
                            return Err(self.mismatch("BUILD", "a dict, a call or an object record", found));
                        }
                    }
                }
                BINPUT => {
                    let idx = self.read_u8("BINPUT index")?;
                    self.memo_put(u32::from(idx))?;
                }
                LONG_BINPUT => {
                    let idx = u32::from_le_bytes(self.take_array::<4>("LONG_BINPUT index")?);
                    self.memo_put(idx)?;
                }
                MEMOIZE => {
                    let idx = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(idx)?;
                }
                BINGET => {
                    let idx = self.read_u8("BINGET index")?;
                    self.memo_get(u32::from(idx))?;
                }
                LONG_BINGET => {
                    let idx = u32::from_le_bytes(self.take_array::<4>("LONG_BINGET index")?);
                    self.memo_get(idx)?;
                }
                SETITEM => {
                    let pair = self.pop_n(2, "SETITEM")?;
                    self.extend_dict(pair, "SETITEM")?;
                }
                SETITEMS => {
                    let items = self.pop_mark("SETITEMS")?;
                    if items.len() & 1 != 0 {
                        return Err(self.mismatch("SETITEMS", "key/value pairs", "an odd number of values"));
                    }
                    self.extend_dict(items, "SETITEMS")?;
                }
                APPEND => {
                    let item = self.pop("APPEND")?;
                    self.extend_list(vec![item], "APPEND")?;
                }
                APPENDS => {
                    let items = self.pop_mark("APPENDS")?;
                    self.extend_list(items, "APPENDS")?;
                }
                other => return Err(PickleError::UnknownOpcode { opcode: other, offset: self.op_start }),
            }
        }
    }

    // ---- reading the byte stream ----

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PickleError> {
        let data = self.data;
        let end = self.pos.checked_add(n).filter(|&e| e <= data.len());
        match end.and_then(|e| data.get(self.pos..e)) {
            Some(slice) => {
                self.pos += n;
                Ok(slice)
            }
            None => Err(PickleError::Truncated { offset: self.pos, what }),
        }
    }

    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PickleError> {
        let offset = self.pos;
        let slice = self.take(N, what)?;
        slice.try_into().map_err(|_| PickleError::Truncated { offset, what })
    }

    fn read_u8(&mut self, what: &'static str) -> Result<u8, PickleError> {
        Ok(self.take_array::<1>(what)?[0])
    }

    fn read_str(&mut self, n: usize, what: &'static str) -> Result<String, PickleError> {
        let offset = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| PickleError::InvalidUtf8 { offset })
    }

    /// Reads up to (not including) the next `\n`, as used by `GLOBAL`.
    fn read_line(&mut self, what: &'static str) -> Result<String, PickleError> {
        let offset = self.pos;
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let len = rest.iter().position(|&b| b == b'\n').ok_or(PickleError::Truncated { offset, what })?;
        let line = self.read_str(len, what)?;
        self.pos += 1; // the newline, known to exist
        Ok(line)
    }

    // ---- stack, memo and arena ----

    fn limit(&self, what: &'static str, limit: usize) -> PickleError {
        PickleError::LimitExceeded { what, limit, offset: self.op_start }
    }

    fn mismatch(&self, opcode: &'static str, expected: &'static str, found: &'static str) -> PickleError {
        PickleError::TypeMismatch { opcode, offset: self.op_start, expected, found }
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&NONE_NODE)
    }

    /// Counts `more` bytes, or refuses them, before they are allocated.
    fn account(&mut self, more: usize) -> Result<(), PickleError> {
        self.bytes = counted_within(self.bytes, more, self.limits.max_bytes, self.op_start)?;
        Ok(())
    }

    /// Refuses, before an allocation of `more` bytes, what [`Self::account`]
    /// would refuse afterwards.
    fn room_for(&self, more: usize) -> Result<(), PickleError> {
        counted_within(self.bytes, more, self.limits.max_bytes, self.op_start).map(|_| ())
    }

    fn new_node(&mut self, node: Node) -> Result<NodeId, PickleError> {
        if self.nodes.len() >= self.limits.max_nodes {
            return Err(self.limit("value count", self.limits.max_nodes));
        }
        // The node's own payload was sized by the opcode that made it (input
        // bytes, or items already on the stack): count it with its slot.
        self.account(heap_bytes(&node))?;
        reserve_within(&mut self.nodes, 1, &mut self.bytes, self.limits.max_bytes, self.op_start)?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn push(&mut self, id: NodeId) -> Result<(), PickleError> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(self.limit("stack size", self.limits.max_stack));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, node: Node) -> Result<(), PickleError> {
        let id = self.new_node(node)?;
        self.push(id)
    }

    /// Lowest stack index usable by the current opcode (values below the
    /// innermost `MARK` belong to an enclosing frame, as in CPython).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow { opcode, offset: self.op_start });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow { opcode, offset: self.op_start })
    }

    fn peek(&self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow { opcode, offset: self.op_start });
        }
        self.stack.last().copied().ok_or(PickleError::StackUnderflow { opcode, offset: self.op_start })
    }

    fn pop_n(&mut self, n: usize, opcode: &'static str) -> Result<Vec<NodeId>, PickleError> {
        let available = self.stack.len().saturating_sub(self.floor());
        if available < n {
            return Err(PickleError::StackUnderflow { opcode, offset: self.op_start });
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_mark(&mut self, opcode: &'static str) -> Result<Vec<NodeId>, PickleError> {
        let mark = self.marks.pop().ok_or(PickleError::MissingMark { opcode, offset: self.op_start })?;
        if mark > self.stack.len() {
            return Err(PickleError::StackUnderflow { opcode, offset: self.op_start });
        }
        self.room_for((self.stack.len() - mark).saturating_mul(std::mem::size_of::<NodeId>()))?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), PickleError> {
        let top = self.peek("memo put")?;
        if !self.memo.contains_key(&idx) {
            if self.memo.len() >= self.limits.max_memo {
                return Err(self.limit("memo size", self.limits.max_memo));
            }
            self.account(MEMO_ENTRY_BYTES)?;
        }
        self.memo.insert(idx, top);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), PickleError> {
        let id = *self.memo.get(&idx).ok_or(PickleError::BadMemo { index: idx, offset: self.op_start })?;
        self.push(id)
    }

    fn string_of(&self, id: NodeId, opcode: &'static str) -> Result<String, PickleError> {
        match self.node(id) {
            Node::Str(s) => Ok(s.clone()),
            other => Err(self.mismatch(opcode, "a str", other.kind())),
        }
    }

    // ---- opcodes with structure ----

    /// A name only: what may be done with it is decided where it is called.
    fn push_global(&mut self, module: String, name: String) -> Result<(), PickleError> {
        self.push_new(Node::Global { module, name })
    }

    /// Records the construction of an object of `class` (never performed).
    fn push_object(&mut self, class: NodeId, args: NodeId, opcode: &'static str) -> Result<(), PickleError> {
        if !matches!(self.node(class), Node::Global { .. }) {
            return Err(self.mismatch(opcode, "a class", self.node(class).kind()));
        }
        if !matches!(self.node(args), Node::Tuple(_)) {
            return Err(self.mismatch(opcode, "an argument tuple", self.node(args).kind()));
        }
        self.push_new(Node::Object { class, args, state: None })
    }

    /// A value for a call of one of [`DATA_CALLS`] (`full` is its name).
    fn data_call(&mut self, full: &str, func: NodeId, args: NodeId, items: &[NodeId]) -> Result<(), PickleError> {
        let value = match (full, items) {
            ("copyreg._reconstructor", [class, ..]) => {
                let no_args = self.empty_tuple()?;
                return self.push_object(*class, no_args, "REDUCE");
            }
            ("argparse.Namespace" | "numpy.dtype", _) => return self.push_object(func, args, "REDUCE"),
            ("_codecs.encode", [text, ..]) => {
                // Latin-1: every character is one byte (how NumPy scalars carry raw bytes).
                let text = self.string_of(*text, "REDUCE")?;
                let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                Node::Bytes(bytes.ok_or_else(|| self.mismatch("REDUCE", "latin-1 text", "wider characters"))?)
            }
            ("numpy.core.multiarray.scalar" | "numpy._core.multiarray.scalar", [dtype, data]) => {
                self.numpy_scalar(*dtype, *data)?
            }
            ("builtins.set" | "builtins.frozenset", []) => Node::List(Vec::new()),
            ("builtins.set" | "builtins.frozenset", [items]) => match self.node(*items) {
                Node::List(v) | Node::Tuple(v) => {
                    self.room_for(v.len().saturating_mul(std::mem::size_of::<NodeId>()))?;
                    Node::List(v.clone())
                }
                other => return Err(self.mismatch("REDUCE", "a list of set items", other.kind())),
            },
            ("builtins.complex", parts) if parts.len() <= 2 => Node::Tuple(parts.to_vec()),
            _ => return Err(self.mismatch("REDUCE", "the arguments of a data call", "others")),
        };
        self.push_new(value)
    }

    fn empty_tuple(&mut self) -> Result<NodeId, PickleError> {
        self.new_node(Node::Tuple(Vec::new()))
    }

    /// A NumPy scalar's value from its `numpy.dtype` record (`dtype(kind, ...)`,
    /// its `BUILD` state's second item the byte order) and its raw bytes.
    fn numpy_scalar(&self, dtype: NodeId, data: NodeId) -> Result<Node, PickleError> {
        let bad = |found| self.mismatch("REDUCE", "a numpy scalar of a bool, int, uint or float dtype", found);
        let Node::Object { args, state, .. } = self.node(dtype) else { return Err(bad(self.node(dtype).kind())) };
        let kind = match self.node(*args) {
            Node::Tuple(a) => a.first().and_then(|&k| match self.node(k) {
                Node::Str(s) => Some(s.as_str()),
                _ => None,
            }),
            _ => None,
        }
        .ok_or_else(|| bad("a dtype without a type code"))?;
        let order = state
            .and_then(|s| match self.node(s) {
                Node::Tuple(items) => items.get(1).copied(),
                _ => None,
            })
            .and_then(|o| match self.node(o) {
                Node::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("<");
        let Node::Bytes(raw) = self.node(data) else { return Err(bad(self.node(data).kind())) };
        let mut bytes = raw.clone();
        if order == ">" {
            bytes.reverse();
        }
        let (code, width) = kind.split_at(kind.len().min(1));
        let width: usize = width.parse().map_err(|_| bad("an unknown dtype"))?;
        if bytes.len() != width || !matches!(width, 1 | 2 | 4 | 8) {
            return Err(bad("bytes of another width"));
        }
        let mut word = [0u8; 8];
        word[..width].copy_from_slice(&bytes);
        let unsigned = u64::from_le_bytes(word);
        let signed = (unsigned << (64 - 8 * width)) as i64 >> (64 - 8 * width);
        Ok(match (code, width) {
            ("b", 1) => Node::Bool(unsigned != 0),
            ("i", _) => Node::Int(signed),
            ("u", _) => Node::Int(i64::try_from(unsigned).map_err(|_| bad("a uint64 above 2^63"))?),
            ("f", 2) => Node::Float(f64::from(half::f16::from_bits(unsigned as u16).to_f32())),
            ("f", 4) => Node::Float(f64::from(f32::from_bits(unsigned as u32))),
            ("f", 8) => Node::Float(f64::from_bits(unsigned)),
            _ => return Err(bad("an unsupported dtype")),
        })
    }

    fn reduce(&mut self) -> Result<(), PickleError> {
        let args = self.pop("REDUCE")?;
        let func = self.pop("REDUCE")?;
        let (module, name) = match self.node(func) {
            Node::Global { module, name } => (module.as_str(), name.as_str()),
            other => return Err(self.mismatch("REDUCE", "a global as callee", other.kind())),
        };
        // The callee first: a call outside the allow-list is refused by name, whatever its arguments.
        let full = format!("{module}.{name}");
        let (allowed, data) = (self.allowed.contains(&full.as_str()), DATA_CALLS.contains(&full.as_str()));
        if !allowed && !data {
            return Err(PickleError::GlobalNotAllowed { name: display_name(module, name) });
        }
        let arg_items = match self.node(args) {
            Node::Tuple(items) => items,
            other => return Err(self.mismatch("REDUCE", "an argument tuple", other.kind())),
        };
        if !allowed {
            let items = arg_items.clone();
            return self.data_call(&full, func, args, &items);
        }
        if module == "collections" && name == "OrderedDict" {
            let pairs = match arg_items.as_slice() {
                [] => Vec::new(),
                [items] => self.pairs_of(*items)?,
                _ => return Err(self.mismatch("REDUCE", "OrderedDict() or OrderedDict(pairs)", "more arguments")),
            };
            return self.push_new(Node::Dict(pairs));
        }
        self.push_new(Node::Call { func, args })
    }

    /// Key/value pairs from a list or tuple of 2-tuples (`OrderedDict(pairs)`).
    fn pairs_of(&self, id: NodeId) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
        let items = match self.node(id) {
            Node::List(items) | Node::Tuple(items) => items,
            Node::Dict(pairs) => {
                // The copy is what a repeated `OrderedDict(d)` multiplies.
                self.room_for(pairs.len().saturating_mul(std::mem::size_of::<(NodeId, NodeId)>()))?;
                return Ok(pairs.clone());
            }
            other => return Err(self.mismatch("REDUCE", "a sequence of pairs for OrderedDict", other.kind())),
        };
        self.room_for(items.len().saturating_mul(std::mem::size_of::<(NodeId, NodeId)>()))?;
        items
            .iter()
            .map(|&item| match self.node(item) {
                Node::Tuple(kv) if kv.len() == 2 => Ok((kv[0], kv[1])),
                other => Err(self.mismatch("REDUCE", "(key, value) pairs for OrderedDict", other.kind())),
            })
            .collect()
    }

    fn extend_dict(&mut self, items: Vec<NodeId>, opcode: &'static str) -> Result<(), PickleError> {
        let target = self.peek(opcode)?;
        let offset = self.op_start;
        let limit = self.limits.max_bytes;
        match self.nodes.get_mut(target) {
            Some(Node::Dict(pairs)) => {
                reserve_within(pairs, items.len() / 2, &mut self.bytes, limit, offset)?;
                pairs.extend(items.chunks_exact(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            other => {
                let found = other.map_or("nothing", |n| n.kind());
                Err(PickleError::TypeMismatch { opcode, offset, expected: "a dict", found })
            }
        }
    }

    fn extend_list(&mut self, items: Vec<NodeId>, opcode: &'static str) -> Result<(), PickleError> {
        let target = self.peek(opcode)?;
        let offset = self.op_start;
        let limit = self.limits.max_bytes;
        match self.nodes.get_mut(target) {
            Some(Node::List(list)) => {
                reserve_within(list, items.len(), &mut self.bytes, limit, offset)?;
                list.extend(items);
                Ok(())
            }
            other => {
                let found = other.map_or("nothing", |n| n.kind());
                Err(PickleError::TypeMismatch { opcode, offset, expected: "a list", found })
            }
        }
    }
}

/// Decodes a little-endian two's-complement integer of up to 8 bytes
/// (longer encodings are accepted when the extra bytes are sign extension).
fn decode_long(bytes: &[u8]) -> Option<i64> {
    let Some(&last) = bytes.last() else {
        return Some(0);
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    let mut buf = [fill; 8];
    for (i, &b) in bytes.iter().enumerate() {
        if i < 8 {
            buf[i] = b;
        } else if b != fill {
            return None;
        }
    }
    let v = i64::from_le_bytes(buf);
    // For >8-byte encodings the sign of the 8-byte value must agree.
    if bytes.len() > 8 && (v < 0) != negative {
        return None;
    }
    Some(v)
}

impl fmt::Display for Tree {
    /// A one-line, bounded summary of the root (for diagnostics).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle tree with {} values, root is a {}", self.nodes.len(), self.node(self.root).kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use itera_test_support::torch::unicode;
    use itera_test_support::XorShift64;

    const ALLOWED: &[&str] = &["collections.OrderedDict", "torch._utils._rebuild_tensor_v2"];

    fn run(data: &[u8]) -> Result<Tree, PickleError> {
        parse(data, ALLOWED, &Limits::default())
    }

    #[test]
    fn ordered_dict_with_items() {
        // OrderedDict(); d['a'] = 7; d['b'] = (1.5, None, True); BUILD with {} state
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        p.extend(unicode("a"));
        p.extend_from_slice(b"K\x07");
        p.extend(unicode("b"));
        p.extend_from_slice(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00N\x88\x87u}b.");
        let tree = run(&p).expect("parses");
        let root = tree.root();
        let pairs = tree.as_dict(root).expect("dict");
        assert_eq!(pairs.len(), 2);
        assert_eq!(tree.as_str(pairs[0].0), Some("a"));
        assert_eq!(tree.as_int(pairs[0].1), Some(7));
        let b = tree.dict_get(root, "b").expect("b");
        let items = tree.as_tuple(b).expect("tuple");
        assert_eq!(tree.as_f64(items[0]), Some(1.5));
        assert_eq!(tree.node(items[1]), &Node::None);
        assert_eq!(tree.node(items[2]), &Node::Bool(true));
    }

    #[test]
    fn plain_dict_list_memo_and_long() {
        // {'x': [1, 2, 300, -2**40], 'y': memo-get of 'x' list}
        let mut p = b"\x80\x02}q\x00(".to_vec();
        p.extend(unicode("x"));
        p.extend_from_slice(b"]q\x01(K\x01K\x02M\x2c\x01\x8a\x06\x00\x00\x00\x00\x00\xffe");
        p.extend(unicode("y"));
        p.extend_from_slice(b"h\x01u.");
        let tree = run(&p).expect("parses");
        let root = tree.root();
        let x = tree.dict_get(root, "x").expect("x");
        let y = tree.dict_get(root, "y").expect("y");
        assert_eq!(x, y, "memo returns the same list");
        let ints: Vec<_> = tree.as_sequence(x).expect("list").iter().map(|&i| tree.as_int(i)).collect();
        assert_eq!(ints, vec![Some(1), Some(2), Some(300), Some(-(1i64 << 40))]);
    }

    #[test]
    fn stack_global_and_short_strings() {
        let p =
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93)R\x94.";
        let tree = run(p).expect("parses");
        assert_eq!(tree.as_dict(tree.root()).map(|d| d.len()), Some(0));
    }

    #[test]
    fn calls_outside_the_allow_list_are_refused_by_name() {
        for (module, name) in [("os", "system"), ("builtins", "eval"), ("posix", "system")] {
            let mut p = format!("\x02c{module}\n{name}\n").into_bytes();
            p.insert(0, 0x80);
            p.extend(unicode("echo pwned"));
            p.extend_from_slice(b"\x85R.");
            let err = run(&p).expect_err("must refuse");
            assert!(matches!(err, PickleError::GlobalNotAllowed { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("pickle global '{module}.{name}' is refused")), "{msg}");
            // One name, not the whole allow-list.
            assert!(!msg.contains("OrderedDict"), "{msg}");
        }
        // STACK_GLOBAL form, too.
        let p = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02ls\x85R.";
        let err = run(p).expect_err("must refuse");
        assert!(err.to_string().contains("'os.system'"), "{err}");
        // A prefix of an allowed name is not allowed.
        let p = b"\x80\x02ccollections\nOrdered\n)R.";
        assert!(matches!(run(p), Err(PickleError::GlobalNotAllowed { .. })));
        // INST and OBJ call their class: refused by name whatever it is.
        let err = run(b"\x80\x02(X\x02\x00\x00\x00lsios\nsystem\n.").expect_err("INST");
        assert!(err.to_string().contains("'os.system'"), "{err}");
        let err = run(b"\x80\x02(cos\nsystem\nX\x02\x00\x00\x00lso.").expect_err("OBJ");
        assert!(err.to_string().contains("'os.system'"), "{err}");
        // A recorded class is not callable either.
        let err = run(b"\x80\x02cmodels.config\nIteraLiteConfig\n)R.").expect_err("call of a class");
        assert!(err.to_string().contains("'models.config.IteraLiteConfig'"), "{err}");
    }

    #[test]
    fn a_name_alone_is_an_inert_record() {
        let tree = run(b"\x80\x02cos\nsystem\n.").expect("a name is data");
        assert_eq!(tree.global_name(tree.root()).as_deref(), Some("os.system"));
    }

    #[test]
    fn constructed_objects_are_records_with_their_state() {
        // models.config.IteraLiteConfig() by NEWOBJ, then BUILD with its attribute dict.
        let mut p = b"\x80\x02cmodels.config\nIteraLiteConfig\n)\x81}(".to_vec();
        p.extend(unicode("top_k_experts"));
        p.extend_from_slice(b"K\x03");
        p.extend(unicode("moe_layers"));
        p.extend_from_slice(b"]K\x01aub.");
        let tree = run(&p).expect("parses");
        let root = tree.root();
        assert_eq!(tree.class_name(root).as_deref(), Some("models.config.IteraLiteConfig"));
        assert_eq!(tree.field(root, "top_k_experts").and_then(|v| tree.as_int(v)), Some(3));
        assert!(tree.field(root, "moe_layers").and_then(|v| tree.as_sequence(v)).is_some_and(|v| v.len() == 1));
        // copyreg._reconstructor(cls, object, None) and a (dict, slots) state; NEWOBJ_EX.
        let mut p = b"\x80\x02ccopyreg\n_reconstructor\ncargparse\nNamespace\ncbuiltins\nobject\nN\x87R}(".to_vec();
        p.extend(unicode("lr"));
        p.extend_from_slice(b"G\x3f\x50\x62\x4d\xd2\xf1\xa9\xfcuN\x86b.");
        let tree = run(&p).expect("parses");
        assert_eq!(tree.class_name(tree.root()).as_deref(), Some("argparse.Namespace"));
        assert_eq!(tree.field(tree.root(), "lr").and_then(|v| tree.as_f64(v)), Some(0.001));
        let tree = run(b"\x80\x04\x8c\x01m\x8c\x01C\x93)}\x92.").expect("NEWOBJ_EX");
        assert_eq!(tree.class_name(tree.root()).as_deref(), Some("m.C"));
        // The class must be a name.
        assert!(matches!(run(b"\x80\x02K\x01)\x81."), Err(PickleError::TypeMismatch { .. })));
    }

    /// A whole pickle of one NumPy scalar (see `itera_test_support::torch::numpy_scalar`).
    fn numpy_scalar(module: &str, code: &str, order: &str, bytes: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(itera_test_support::torch::numpy_scalar(module, code, order, bytes));
        p.push(b'.');
        p
    }

    #[test]
    fn numpy_scalars_sets_and_complex_numbers_are_values() {
        let value = |p: &[u8]| run(p).map(|t| t.node(t.root()).clone());
        assert_eq!(value(&numpy_scalar(".core", "i8", "<", &(-5i64).to_le_bytes())), Ok(Node::Int(-5)));
        assert_eq!(value(&numpy_scalar("._core", "f8", "<", &0.25f64.to_le_bytes())), Ok(Node::Float(0.25)));
        assert_eq!(value(&numpy_scalar(".core", "f4", ">", &1.5f32.to_be_bytes())), Ok(Node::Float(1.5)));
        assert_eq!(value(&numpy_scalar(".core", "u2", "<", &[0xff, 0xff])), Ok(Node::Int(65535)));
        assert_eq!(value(&numpy_scalar(".core", "b1", "|", &[1])), Ok(Node::Bool(true)));
        // Bytes of another width, or a type code without one, are refused.
        assert!(matches!(run(&numpy_scalar(".core", "i8", "<", &[1, 2])), Err(PickleError::TypeMismatch { .. })));
        assert!(matches!(run(&numpy_scalar(".core", "O", "|", &[0])), Err(PickleError::TypeMismatch { .. })));
        // set([1, 2]), frozenset via protocol 4 opcodes, complex(1.0, 2.0).
        let tree = run(b"\x80\x02cbuiltins\nset\n](K\x01K\x02e\x85R.").expect("set");
        assert_eq!(tree.as_sequence(tree.root()).map(<[_]>::len), Some(2));
        let tree = run(b"\x80\x04\x8f(K\x01\x90(K\x02\x91\x86.").expect("set opcodes");
        assert_eq!(tree.as_tuple(tree.root()).map(<[_]>::len), Some(2));
        let tree =
            run(b"\x80\x02cbuiltins\ncomplex\nG?\xf0\x00\x00\x00\x00\x00\x00G@\x00\x00\x00\x00\x00\x00\x00\x86R.")
                .expect("complex");
        let parts = tree.as_tuple(tree.root()).expect("a pair");
        assert_eq!(parts.iter().map(|&p| tree.as_f64(p)).collect::<Vec<_>>(), [Some(1.0), Some(2.0)]);
    }

    #[test]
    fn unknown_opcode_is_named() {
        let err = run(b"\x80\x02S'abc'\n.").expect_err("STRING unsupported");
        assert_eq!(err, PickleError::UnknownOpcode { opcode: b'S', offset: 2 });
        assert!(err.to_string().contains("0x53 (STRING) at byte 2"), "{err}");
        let err = run(b"\x80\x02\xff.").expect_err("not an opcode");
        assert!(err.to_string().contains("0xff at byte 2"), "{err}");
        // Opcodes torch.save never writes stay unsupported.
        for op in [b'0', b'2', b'P'] {
            assert!(matches!(run(&[0x80, 2, b'N', op]), Err(PickleError::UnknownOpcode { .. })), "{op}");
        }
    }

    #[test]
    fn truncated_pickles_are_errors() {
        assert!(matches!(run(b""), Err(PickleError::Truncated { .. })));
        assert!(matches!(run(b"\x80\x02X\x10\x00\x00\x00ab"), Err(PickleError::Truncated { .. })));
        assert!(matches!(run(b"\x80\x02N"), Err(PickleError::Truncated { .. })));
        assert!(matches!(run(b"\x80\x02ccollections"), Err(PickleError::Truncated { .. })));
        assert!(matches!(run(b"\x80\x02J\x01\x02"), Err(PickleError::Truncated { .. })));
        // Every prefix of a valid pickle fails cleanly.
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        p.extend(unicode("key"));
        p.extend_from_slice(b"G\x3f\xf8\x00\x00\x00\x00\x00\x00u.");
        assert!(run(&p).is_ok());
        for cut in 0..p.len() {
            assert!(run(&p[..cut]).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn malformed_structure_is_an_error() {
        assert!(matches!(run(b"\x80\x02."), Err(PickleError::StackUnderflow { .. })));
        assert!(matches!(run(b"\x80\x02h\x05."), Err(PickleError::BadMemo { index: 5, .. })));
        assert!(matches!(run(b"\x80\x02t."), Err(PickleError::MissingMark { .. })));
        assert!(matches!(run(b"\x80\x02NNs."), Err(PickleError::StackUnderflow { .. })));
        assert!(matches!(run(b"\x80\x02NNNs."), Err(PickleError::TypeMismatch { .. })));
        assert!(matches!(run(b"\x80\x02NN\x85R."), Err(PickleError::TypeMismatch { .. })));
        // Values below a MARK cannot be consumed by opcodes inside it.
        assert!(matches!(run(b"\x80\x02}(K\x01s."), Err(PickleError::StackUnderflow { .. })));
        assert!(matches!(run(b"\x80\x09N."), Err(PickleError::UnsupportedProtocol { version: 9 })));
        assert!(matches!(run(b"\x80\x02X\x02\x00\x00\x00\xff\xfe."), Err(PickleError::InvalidUtf8 { .. })));
        let long9 = b"\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.";
        assert!(matches!(run(long9), Err(PickleError::IntegerTooLarge { .. })));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // 20,000 nested MARKs exceed the default mark depth of 10,000.
        let mut p = vec![0x80, 2];
        p.extend([b'('; 20_000]);
        let err = run(&p).expect_err("too deep");
        assert!(matches!(err, PickleError::LimitExceeded { what: "MARK nesting depth", limit: 10_000, .. }), "{err:?}");

        // 9,000 nested MARK..TUPLE levels are fine.
        let mut p = vec![0x80, 2];
        p.extend([b'('; 9_000]);
        p.extend([b't'; 9_000]);
        p.push(b'.');
        assert!(run(&p).is_ok());

        // A million TUPLE1 levels: no recursion anywhere (parse or drop).
        let mut p = vec![0x80, 2, b'N'];
        p.extend(vec![0x85u8; 1_000_000]);
        p.push(b'.');
        let tree = run(&p).expect("flat arena handles depth");
        assert_eq!(tree.len(), 1_000_001);

        // A list that contains itself does not hang or overflow.
        let tree = run(b"\x80\x02]q\x00h\x00a.").expect("self-reference");
        assert_eq!(tree.as_sequence(tree.root()), Some(&[tree.root()][..]));

        // Small explicit limits are honoured.
        let limits = Limits { max_stack: 10, ..Limits::default() };
        let mut p = vec![0x80, 2];
        p.extend([b'N'; 20]);
        assert!(matches!(parse(&p, ALLOWED, &limits), Err(PickleError::LimitExceeded { what: "stack size", .. })));
        let limits = Limits { max_input_bytes: 4, ..Limits::default() };
        assert!(matches!(parse(b"\x80\x02NN.", ALLOWED, &limits), Err(PickleError::LimitExceeded { .. })));
    }

    #[test]
    fn value_bytes_are_bounded_not_only_counted() {
        // A dict of 10,000 pairs copied by OrderedDict(d) 10,000 times: 100 KB of pickle,
        // within every count limit, that would hold 1.6 GB.
        let mut p = b"\x80\x02K\x07q\x00ccollections\nOrderedDict\nq\x01}q\x02(".to_vec();
        p.extend(b"h\x00h\x00".repeat(10_000));
        p.push(b'u');
        p.extend(b"h\x01h\x02\x85R".repeat(10_000));
        p.push(b'.');
        let err = run(&p).expect_err("copies");
        assert!(
            matches!(err, PickleError::MemoryExceeded { limit, needed, .. } if limit == 64 << 20 && needed > limit),
            "{err}"
        );

        // Under a limit of its own, a small pickle's count is exact enough to be tight.
        let small = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02u.";
        let bytes = run(small).expect("parses").bytes();
        assert!(bytes > 0);
        let tight = Limits { max_bytes: bytes - 1, ..Limits::default() };
        assert!(matches!(parse(small, ALLOWED, &tight), Err(PickleError::MemoryExceeded { .. })));
        assert_eq!(
            parse(small, ALLOWED, &Limits { max_bytes: bytes, ..Limits::default() }).map(|t| t.bytes()),
            Ok(bytes)
        );

        // A long APPENDS list grows in counted steps.
        let mut p = b"\x80\x02]q\x00(".to_vec();
        p.extend(b"h\x00".repeat(100_000));
        p.extend_from_slice(b"e.");
        let limits = Limits { max_bytes: 400_000, ..Limits::default() };
        assert!(matches!(parse(&p, ALLOWED, &limits), Err(PickleError::MemoryExceeded { .. })));
    }

    #[test]
    fn refused_globals_are_short_and_escaped() {
        let mut p = b"\x80\x02cos\x1b]0;pwn\x07\n".to_vec();
        p.extend("s".repeat(10_000).as_bytes());
        p.extend_from_slice(b"\n)R.");
        let msg = run(&p).expect_err("refused").to_string();
        assert!(msg.contains("'os\\u{1b}]0;pwn\\u{7}.sss"), "{msg}");
        assert!(!msg.chars().any(char::is_control), "{msg}");
        assert!(msg.len() < 300, "{} bytes: {msg}", msg.len());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift64(0x2545_f491_4f6c_dd1du64);
        let mut next = || rng.next_u64();
        let alphabet =
            b"(.JKMNQRXBCabc}ehj]qrstu)Gio\x80\x81\x85\x86\x87\x88\x89\x8a\x8c\x8f\x90\x91\x92\x93\x94\x95\n";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[((r >> 8) % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let _ = run(&bytes);
        }
    }
}
