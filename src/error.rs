//! The one error type of ternlm, grouped by area (STYLE.md practice 11).
//!
//! Every failure that input can cause is a variant here, never a panic. Each variant has a stable
//! machine-readable [`Error::code`] that the wasm adapter turns into a JS `Error.code`.

use thiserror::Error as ThisError;

/// Crate-wide result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// All errors of ternlm.
#[derive(Debug, ThisError)]
pub enum Error {
    #[error("gguf: {0}")]
    Gguf(#[from] GgufError),
    #[error("quant: {0}")]
    Quant(#[from] QuantError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("session: {0}")]
    Session(#[from] SessionError),
    #[error("gpu: {0}")]
    Gpu(#[from] GpuError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// A stable code for programs (and for JS `Error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Gguf(e) => e.code(),
            Error::Quant(e) => e.code(),
            Error::Tokenizer(e) => e.code(),
            Error::Model(e) => e.code(),
            Error::Session(e) => e.code(),
            Error::Gpu(e) => e.code(),
            Error::Io { .. } => "io",
            Error::Download { .. } => "download",
            Error::Usage(_) => "usage",
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors of the GGUF container: framing, metadata, tensor table, split sets.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum GgufError {
    #[error("truncated: {what} needs {need} bytes at offset {offset}, only {have} remain")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        have: u64,
    },
    #[error("not a GGUF file (magic {found:02x?})")]
    BadMagic { found: [u8; 4] },
    #[error("big-endian GGUF files are not supported")]
    BigEndian,
    #[error("unsupported GGUF version {0} (2 and 3 are supported)")]
    UnsupportedVersion(u32),
    #[error("{what} = {value} exceeds the limit {limit}")]
    TooLarge {
        what: String,
        value: u64,
        limit: u64,
    },
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("metadata key '{key}' has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("duplicate metadata key '{0}'")]
    DuplicateKey(String),
    #[error("metadata key '{key}' is {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("metadata key '{key}' value {value} is out of range for {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("missing metadata key '{0}'")]
    MissingKey(String),
    #[error("general.alignment = {0} is not a non-zero power of two")]
    BadAlignment(u64),
    #[error("tensor '{name}': unknown ggml type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("duplicate tensor name '{0}'")]
    DuplicateTensor(String),
    #[error("tensors '{first}' and '{second}' overlap (offset {second_offset} < end {first_end})")]
    Overlap {
        first: String,
        second: String,
        first_end: u64,
        second_offset: u64,
    },
    #[error(
        "tensor '{name}': type 30 data span {found} B matches a ruvllm BITNET_T158 tensor \
         ({expected} B), not BF16 ({bf16} B); enable accept_ruvllm_t158"
    )]
    LooksLikeRuvllm {
        name: String,
        found: u64,
        expected: u64,
        bf16: u64,
    },
    #[error("split set: {0}")]
    Split(String),
}

impl GgufError {
    pub fn code(&self) -> &'static str {
        match self {
            GgufError::Truncated { .. } => "gguf_truncated",
            GgufError::BadMagic { .. } => "gguf_bad_magic",
            GgufError::BigEndian => "gguf_big_endian",
            GgufError::UnsupportedVersion(_) => "gguf_version",
            GgufError::TooLarge { .. } => "gguf_too_large",
            GgufError::InvalidUtf8 { .. } => "gguf_utf8",
            GgufError::UnknownValueType { .. } => "gguf_value_type",
            GgufError::DuplicateKey(_) => "gguf_duplicate_key",
            GgufError::WrongType { .. } => "gguf_wrong_type",
            GgufError::OutOfRange { .. } => "gguf_out_of_range",
            GgufError::MissingKey(_) => "gguf_missing_key",
            GgufError::BadAlignment(_) => "gguf_alignment",
            GgufError::UnknownTensorType { .. } => "gguf_tensor_type",
            GgufError::BadTensor { .. } => "gguf_bad_tensor",
            GgufError::DuplicateTensor(_) => "gguf_duplicate_tensor",
            GgufError::Overlap { .. } => "gguf_overlap",
            GgufError::LooksLikeRuvllm { .. } => "gguf_ruvllm",
            GgufError::Split(_) => "gguf_split",
        }
    }
}

/// Errors of the weight codecs.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum QuantError {
    #[error("tensor '{name}': type {type_name} (id {type_id}) is recognised but not supported")]
    Unsupported {
        name: String,
        type_name: &'static str,
        type_id: u32,
    },
    #[error("tensor '{name}': {reason}")]
    Shape { name: String, reason: String },
}

impl QuantError {
    pub fn code(&self) -> &'static str {
        match self {
            QuantError::Unsupported { .. } => "quant_unsupported",
            QuantError::Shape { .. } => "quant_shape",
        }
    }
}

/// Errors of tokenizers, chat templates and detokenization.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum TokenizerError {
    #[error("unsupported tokenizer model '{0}'")]
    UnknownModel(String),
    #[error("unsupported pre-tokenizer '{0}'")]
    UnknownPre(String),
    #[error("bad vocabulary: {0}")]
    BadVocab(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("chat template: {0}")]
    Template(String),
    #[error("chat template exceeded its {what} limit")]
    TemplateLimit { what: &'static str },
}

impl TokenizerError {
    pub fn code(&self) -> &'static str {
        match self {
            TokenizerError::UnknownModel(_) => "tokenizer_unknown_model",
            TokenizerError::UnknownPre(_) => "tokenizer_unknown_pre",
            TokenizerError::BadVocab(_) => "tokenizer_bad_vocab",
            TokenizerError::TokenOutOfRange { .. } => "tokenizer_token_range",
            TokenizerError::Template(_) => "template",
            TokenizerError::TemplateLimit { .. } => "template_limit",
        }
    }
}

/// Errors of model loading and the forward pass.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum ModelError {
    #[error("unsupported architecture '{0}'")]
    UnsupportedArch(String),
    #[error("missing tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("model does not match its metadata: {0}")]
    Mismatch(String),
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { id: u32, n_vocab: usize },
    #[error("no tokens to run")]
    EmptyInput,
    #[error("the model's weights are on the GPU only (it was streamed there): load it again to run on the CPU")]
    GpuOnly,
    #[error("the model load failed earlier: {0}")]
    LoadFailed(String),
}

impl ModelError {
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::UnsupportedArch(_) => "model_unsupported_arch",
            ModelError::MissingTensor(_) => "model_missing_tensor",
            ModelError::TensorShape { .. } => "model_tensor_shape",
            ModelError::Mismatch(_) => "model_mismatch",
            ModelError::TokenOutOfRange { .. } => "model_token_range",
            ModelError::EmptyInput => "model_empty_input",
            ModelError::GpuOnly => "model_gpu_only",
            ModelError::LoadFailed(_) => "model_load_failed",
        }
    }
}

/// Errors of the GPU backend. After any of them the CPU backend still works; after
/// [`GpuError::DeviceLost`] the GPU engine must be created again.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum GpuError {
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("could not create the GPU device: {0}")]
    Device(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    #[error("tensor '{name}' needs {needed} bytes in one binding, the device allows {limit}")]
    TooLarge {
        name: String,
        needed: u64,
        limit: u64,
    },
    #[error("GPU validation error: {0}")]
    Validation(String),
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
    #[error("type {0} has no GPU kernel")]
    UnsupportedType(String),
}

impl GpuError {
    pub fn code(&self) -> &'static str {
        match self {
            GpuError::NoAdapter(_) => "gpu_no_adapter",
            GpuError::Device(_) => "gpu_device",
            GpuError::DeviceLost(_) => "gpu_device_lost",
            GpuError::OutOfMemory(_) => "gpu_out_of_memory",
            GpuError::TooLarge { .. } => "gpu_too_large",
            GpuError::Validation(_) => "gpu_validation",
            GpuError::Readback(_) => "gpu_readback",
            GpuError::UnsupportedType(_) => "gpu_unsupported_type",
        }
    }
}

/// Errors of sessions: context, state, generation.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum SessionError {
    #[error("prompt of {n_prompt} tokens does not fit the context of {n_ctx} (with {reserve} reserved for generation)")]
    ContextOverflow {
        n_prompt: usize,
        n_ctx: usize,
        reserve: usize,
    },
    #[error("position {pos} is beyond the {len} cached tokens")]
    BadPosition { pos: usize, len: usize },
    #[error("bad session state: {0}")]
    BadState(String),
    #[error("generation cancelled")]
    Cancelled,
    #[error("bad sampling parameters: {0}")]
    BadParams(String),
    #[error("saved state: {0}")]
    State(#[from] StateError),
}

impl SessionError {
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::ContextOverflow { .. } => "context_overflow",
            SessionError::BadPosition { .. } => "session_position",
            SessionError::BadState(_) => "session_state",
            SessionError::Cancelled => "cancelled",
            SessionError::BadParams(_) => "session_params",
            SessionError::State(e) => e.code(),
        }
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::Session(SessionError::State(e))
    }
}

/// Errors of loading a saved session state (spec/runtime.md §3.2). Every one is found before the
/// session is touched.
#[derive(Debug, Clone, PartialEq, Eq, ThisError)]
pub enum StateError {
    #[error("not a ternlm session state (magic {found:02x?})")]
    BadMagic { found: Vec<u8> },
    #[error("state format version {got} is not supported (this build reads {want})")]
    BadVersion { got: u32, want: u32 },
    #[error("the state was saved by a different model")]
    ModelMismatch,
    #[error("{field} is {got}, this session needs {want}")]
    ShapeMismatch { field: String, got: u64, want: u64 },
    #[error("state of {len} tokens exceeds the context of {capacity}")]
    LenOverflow { len: u64, capacity: u64 },
    #[error("truncated: {what} needs {need} bytes, {got} remain")]
    Truncated { what: String, need: u64, got: u64 },
    #[error("{0} bytes after the end of the state")]
    TrailingBytes(u64),
    #[error("checksum mismatch: the state is corrupted")]
    Checksum,
    #[error("bad value: {0}")]
    BadValue(String),
}

impl StateError {
    pub fn code(&self) -> &'static str {
        match self {
            StateError::BadMagic { .. } => "state_bad_magic",
            StateError::BadVersion { .. } => "state_bad_version",
            StateError::ModelMismatch => "state_model_mismatch",
            StateError::ShapeMismatch { .. } => "state_shape_mismatch",
            StateError::LenOverflow { .. } => "state_len_overflow",
            StateError::Truncated { .. } => "state_truncated",
            StateError::TrailingBytes(_) => "state_trailing_bytes",
            StateError::Checksum => "state_checksum",
            StateError::BadValue(_) => "state_bad_value",
        }
    }
}
