//! NF4 on NVIDIA GPUs (feature `cuda`). A matrix is uploaded exactly as the file
//! stores it (packed codes, 8-bit absmax codes, one f32 per 256 blocks: 4.13 bits per
//! weight at bitsandbytes' defaults), never widened, so a 27B model in NF4 takes the
//! VRAM its file says rather than four times that in BF16.
//!
//! Products take one of two paths ([`Nf4Cuda::forward`]):
//! - up to [`GEMV_M`] activation rows (decode, a batch of decodes, a verify pass):
//!   `nf4.cu`'s vector kernel, one warp per output row, which reads each packed byte
//!   once for all rows and decodes it in registers; activations and sums in F32;
//! - more rows (a prefill): the matrix dequantized into a transient BF16 copy and
//!   multiplied by cuBLAS on tensor cores, as bitsandbytes does for transformers (it
//!   dequantizes to the compute dtype). The copy lives for one product.
//!
//! The kernels are in `nf4.cu` (PTX built by build.rs); `nf4_check.cu` runs their
//! arithmetic on the host (scripts/build-cuda), and scripts/gpu-check compares the
//! CUDA results with the CPU's on real shapes.

use super::load::Scales;
use super::NF4;
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, D};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/nf4.ptx"));
const MODULE: &str = "unicorn_nf4";
/// Most activation rows the vector kernel takes (it is instantiated for 1 to 8).
pub const GEMV_M: usize = 8;
/// Warps (output rows) per thread block of the vector kernel (`NF4_ROWS_PER_BLOCK`).
const ROWS_PER_BLOCK: usize = 4;
/// Stands for the null codes pointer of a matrix with plain f32 scales.
const NULL: u64 = 0;

/// An NF4 matrix `[rows, cols]` in VRAM.
pub struct Nf4Cuda {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Weights per block (a power of two).
    pub blocksize: usize,
    packed: CudaSlice<u8>,
    codes: Option<CudaSlice<u8>>,
    nested: CudaSlice<f32>,
    map: CudaSlice<f32>,
    levels: CudaSlice<f32>,
    offset: f32,
    /// The kernels' int parameters: log2 block size, log2 nested block size, rows, cols.
    ints: [i32; 4],
    device: CudaDevice,
}

impl std::fmt::Debug for Nf4Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nf4Cuda({}x{}, blocks of {}, {:?})",
            self.rows,
            self.cols,
            self.blocksize,
            self.device.id()
        )
    }
}

impl Nf4Cuda {
    /// Uploads a matrix whose sizes the loader has checked against each other.
    pub fn new(
        device: &CudaDevice,
        (rows, cols): (usize, usize),
        blocksize: usize,
        packed: &[u8],
        scales: Scales<'_>,
    ) -> Result<Self> {
        let n = rows * cols;
        let blocks = n.div_ceil(blocksize);
        let fits = |v: usize| i32::try_from(v).is_ok();
        if !(fits(rows) && fits(cols) && blocksize.is_power_of_two())
            || packed.len() != n.div_ceil(2)
        {
            candle_core::bail!("NF4 matrix {rows}x{cols} does not fit the CUDA kernels");
        }
        let log2 = |v: usize| v.trailing_zeros() as i32;
        let (codes, nested, map, offset, nested_log2) = match scales {
            Scales::Plain(a) if a.len() == blocks => (None, a, vec![0f32; 256], 0.0, 0),
            Scales::Double {
                codes,
                nested,
                map,
                nested_blocksize,
                offset,
            } if codes.len() == blocks
                && map.len() == 256
                && nested_blocksize.is_power_of_two()
                && nested.len() == blocks.div_ceil(nested_blocksize) =>
            {
                let codes = device.clone_htod(codes)?;
                (Some(codes), nested, map, offset, log2(nested_blocksize))
            }
            _ => candle_core::bail!("NF4 matrix {rows}x{cols}: scales do not fit its blocks"),
        };
        Ok(Self {
            rows,
            cols,
            blocksize,
            packed: device.clone_htod(packed)?,
            codes,
            nested: device.clone_htod(&nested)?,
            map: device.clone_htod(&map)?,
            levels: device.clone_htod(&NF4)?,
            offset,
            ints: [log2(blocksize), nested_log2, rows as i32, cols as i32],
            device: device.clone(),
        })
    }

    /// Bytes held in VRAM.
    pub fn bytes(&self) -> usize {
        self.packed.len()
            + self.codes.as_ref().map_or(0, |c| c.len())
            + (self.nested.len() + self.map.len() + self.levels.len()) * 4
    }

    /// Whether the vector kernel takes this layout (`nf4_chunked` in `nf4.cu`).
    fn chunked(&self) -> bool {
        self.cols.is_multiple_of(32) && self.blocksize >= 32
    }

    /// Pushes the matrix's kernel parameters (`NF4_MATRIX_PARAMS` in `nf4.cu`).
    fn push<'a>(&'a self, b: &mut LaunchArgs<'a>) {
        b.arg(&self.packed);
        match &self.codes {
            Some(c) => b.arg(c),
            None => b.arg(&NULL),
        };
        b.arg(&self.nested)
            .arg(&self.map)
            .arg(&self.levels)
            .arg(&self.offset);
        for v in &self.ints {
            b.arg(v);
        }
    }

    /// `x · Wᵀ` for `x` `[..., cols]`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(D::Minus1)?;
        if k != self.cols {
            candle_core::bail!("matmul: input has {k} columns, NF4 weight {}", self.cols);
        }
        let m = x.elem_count() / k.max(1);
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = self.rows;
        }
        let x2 = x.to_dtype(DType::F32)?.reshape((m, k))?;
        let y = if (1..=GEMV_M).contains(&m) && self.chunked() {
            // The kernel reads activations 16 bytes at a time from the start of the
            // storage; a view elsewhere in a larger buffer is copied out first.
            let x2 = if x2.is_contiguous() && x2.layout().start_offset() == 0 {
                x2
            } else {
                x2.affine(1.0, 0.0)?
            };
            x2.apply_op1_no_bwd(&Gemv(self))?
        } else {
            let w = x2.apply_op1_no_bwd(&Rows(self, DType::BF16, false))?;
            x2.to_dtype(DType::BF16)?
                .matmul(&w.t()?)?
                .to_dtype(DType::F32)?
        };
        y.reshape(dims)?.to_dtype(x.dtype())
    }

    /// Rows of the matrix for the given ids: `[ids.len(), cols]` in F32.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.flatten_all()?.to_dtype(DType::U32)?;
        if let Some(&id) = ids
            .to_vec1::<u32>()?
            .iter()
            .find(|&&i| i as usize >= self.rows)
        {
            candle_core::bail!("token id {id} outside the embedding ({} rows)", self.rows);
        }
        ids.apply_op1_no_bwd(&Rows(self, DType::F32, true))
    }
}

/// Checks that an op's input lives on the matrix's GPU.
fn same_device(w: &Nf4Cuda, s: &CudaStorage) -> Result<()> {
    if s.device.id() != w.device.id() {
        candle_core::bail!("NF4 matrix and activations are on different GPUs");
    }
    Ok(())
}

/// `x · Wᵀ` for `x` `[m, cols]` F32, m ≤ [`GEMV_M`]: the vector kernel.
struct Gemv<'a>(&'a Nf4Cuda);

impl CustomOp1 for Gemv<'_> {
    fn name(&self) -> &'static str {
        "nf4-gemv"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NF4 CUDA kernel got CPU activations")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let w = self.0;
        same_device(w, s)?;
        let (m, k) = l.shape().dims2()?;
        // The kernel loads activations 16 bytes at a time: a misaligned start would
        // fault the whole CUDA context, so it is refused here.
        if k != w.cols
            || !(1..=GEMV_M).contains(&m)
            || !l.is_contiguous()
            || !l.start_offset().is_multiple_of(4)
        {
            candle_core::bail!("nf4-gemv: activations {:?}", l.shape());
        }
        let x = s.as_cuda_slice::<f32>()?.slice(l.start_offset()..);
        let dev = &s.device;
        // SAFETY: the kernel writes every element (one per row and activation row).
        let mut y = unsafe { dev.alloc::<f32>(m * w.rows)? };
        let func = dev.get_or_load_custom_func(&format!("nf4_gemv_{m}"), MODULE, PTX)?;
        {
            let mut b = func.builder();
            w.push(&mut b);
            b.arg(&x).arg(&mut y);
            let cfg = LaunchConfig {
                grid_dim: (w.rows.div_ceil(ROWS_PER_BLOCK) as u32, 1, 1),
                block_dim: (32, ROWS_PER_BLOCK as u32, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the parameters follow `NF4_MATRIX_PARAMS, x, y`; x holds m·cols
            // F32 from a 16-byte-aligned start, y m·rows.
            unsafe { b.launch(cfg) }.w()?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            Shape::from((m, w.rows)),
        ))
    }
}

/// Rows of the matrix dequantized to F32 or BF16: those its input lists (U32 ids), or
/// with `false` all of them (the input then only says where to run).
struct Rows<'a>(&'a Nf4Cuda, DType, bool);

impl CustomOp1 for Rows<'_> {
    fn name(&self) -> &'static str {
        "nf4-rows"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("the NF4 CUDA kernel got CPU ids")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let Rows(w, dtype, listed) = *self;
        same_device(w, s)?;
        if listed && !l.is_contiguous() {
            candle_core::bail!("nf4-rows: ids are not contiguous");
        }
        let n = if listed {
            l.shape().elem_count()
        } else {
            w.rows
        };
        let ids = if listed {
            Some(s.as_cuda_slice::<u32>()?.slice(l.start_offset()..))
        } else {
            None
        };
        let dev = &s.device;
        let total = n * w.cols;
        // A grid-stride loop: enough blocks to fill the GPU, at most 2^16.
        let cfg = LaunchConfig {
            grid_dim: (total.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let out = match dtype {
            DType::F32 => {
                let out = launch_rows::<f32>(w, "nf4_rows_f32", ids.as_ref(), n, s, cfg)?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            DType::BF16 => {
                // The kernel stores bf16 bit patterns.
                let out = launch_rows::<half::bf16>(w, "nf4_rows_bf16", ids.as_ref(), n, s, cfg)?;
                CudaStorage::wrap_cuda_slice(out, dev.clone())
            }
            d => candle_core::bail!("nf4-rows: no kernel for {d:?}"),
        };
        Ok((out, Shape::from((n, w.cols))))
    }
}

/// Runs `kernel` (`nf4_rows_*`) for `n` rows into a new buffer of `n · cols` values.
fn launch_rows<T: DeviceRepr>(
    w: &Nf4Cuda,
    kernel: &str,
    ids: Option<&CudaView<'_, u32>>,
    n: usize,
    s: &CudaStorage,
    cfg: LaunchConfig,
) -> Result<CudaSlice<T>> {
    let dev = &s.device;
    // SAFETY: the kernel writes all n·cols elements.
    let mut out = unsafe { dev.alloc::<T>(n * w.cols)? };
    let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
    let n64 = n as u64;
    let mut b = func.builder();
    w.push(&mut b);
    match ids {
        Some(ids) => b.arg(ids),
        None => b.arg(&NULL),
    };
    b.arg(&n64).arg(&mut out);
    // SAFETY: the parameters follow `NF4_MATRIX_PARAMS, ids, n, out`, with ids null
    // or n long.
    unsafe { b.launch(cfg) }.w()?;
    drop(b);
    Ok(out)
}
