"""The `vllm-algorithm` peer: the published vLLM fused_moe algorithm, written here from its
description (no code copied), plus a read-only Triton kernel used to measure read bandwidth.

The algorithm, in four steps:
  1. align (moe_align_block_size): the T*k (token, slot) pairs are grouped by expert; each expert's
     segment is padded up to a multiple of BLOCK_M. Padding entries hold the invalid index T*k.
     Outputs: sorted_ids [max_blocks*BLOCK_M] (flat pair index t*k+j, or T*k), expert_ids
     [max_blocks] (the expert of each BLOCK_M block) and the padded length actually used.
  2. GEMM 1 (gate_up): one program per (m-block, n-block) tile, GROUP_M-swizzled; the program
     gathers the x rows of its BLOCK_M pairs by index (row = pair // k) and multiplies them by its
     expert's [2I, H] weight; the result row is written at the pair's flat index.
  3. silu(gate) * up, a separate elementwise kernel: [T*k, 2I] -> [T*k, I].
  4. GEMM 2 (down): the same tile kernel over the activation rows (row = pair), with the routing
     weight multiplied in the epilogue; then a separate sum over the k slots: [T, k, H] -> [T, H].

This module imports torch and triton at import time: import it only on the GPU machine.
"""

import torch
import triton
import triton.language as tl


# ---------------------------------------------------------------------------------------------
# 1. align
# ---------------------------------------------------------------------------------------------
@triton.jit
def _align_init_kernel(sorted_ptr, counts_ptr, sorted_len, num_experts, invalid,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    fill = tl.zeros([BLOCK], dtype=tl.int32) + invalid
    tl.store(sorted_ptr + offs, fill, mask=offs < sorted_len)
    tl.store(counts_ptr + offs, tl.zeros([BLOCK], dtype=tl.int32), mask=offs < num_experts)


@triton.jit
def _align_count_kernel(ids_ptr, counts_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    e = tl.load(ids_ptr + offs, mask=m, other=0)
    tl.atomic_add(counts_ptr + e, tl.full([BLOCK], 1, tl.int32), mask=m)


@triton.jit
def _align_prefix_kernel(counts_ptr, cursor_ptr, expert_ids_ptr, padded_len_ptr, num_experts,
                         max_blocks, BLOCK_M: tl.constexpr, E_POW2: tl.constexpr,
                         CHUNK: tl.constexpr):
    # one program: per-expert block counts, their exclusive prefix sum, the expert of each block
    e = tl.arange(0, E_POW2)
    em = e < num_experts
    c = tl.load(counts_ptr + e, mask=em, other=0)
    nblk = (c + BLOCK_M - 1) // BLOCK_M
    end = tl.cumsum(nblk, 0)  # inclusive, in blocks
    start = end - nblk
    tl.store(cursor_ptr + e, start * BLOCK_M, mask=em)
    total = tl.sum(nblk, 0)
    tl.store(padded_len_ptr, total * BLOCK_M)
    ends = tl.where(em, end, 1 << 30)
    for b0 in range(0, max_blocks, CHUNK):
        b = b0 + tl.arange(0, CHUNK)
        # ends are non-decreasing: the expert owning block b is the number of experts ending at
        # or before b
        owner = tl.sum((ends[None, :] <= b[:, None]).to(tl.int32), axis=1)
        owner = tl.where(b < total, owner, 0)
        tl.store(expert_ids_ptr + b, owner, mask=b < max_blocks)


@triton.jit
def _align_scatter_kernel(ids_ptr, cursor_ptr, sorted_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    e = tl.load(ids_ptr + offs, mask=m, other=0)
    pos = tl.atomic_add(cursor_ptr + e, tl.full([BLOCK], 1, tl.int32), mask=m)
    tl.store(sorted_ptr + pos, offs, mask=m)


class Align:
    """The output of align_block_size() for one BLOCK_M."""

    def __init__(self, sorted_ids, expert_ids, padded_len, max_blocks, block_m):
        self.sorted_ids = sorted_ids
        self.expert_ids = expert_ids
        self.padded_len = padded_len
        self.max_blocks = max_blocks
        self.block_m = block_m


def _next_pow2(n):
    p = 1
    while p < n:
        p *= 2
    return p


def align_block_size(topk_ids, num_experts, block_m):
    """topk_ids: [T, k] int32 (CUDA). Graph-capturable (sizes depend on T, k, E, BLOCK_M only)."""
    ids = topk_ids.reshape(-1)
    if ids.dtype != torch.int32:
        ids = ids.to(torch.int32)
    ids = ids.contiguous()
    n = ids.numel()
    # each hit expert wastes at most BLOCK_M - 1 padding slots, and at most min(E, n) are hit
    max_blocks = triton.cdiv(n + min(num_experts, n) * (block_m - 1), block_m)
    sorted_len = max_blocks * block_m
    dev = ids.device
    sorted_ids = torch.empty(sorted_len, dtype=torch.int32, device=dev)
    expert_ids = torch.empty(max_blocks, dtype=torch.int32, device=dev)
    padded_len = torch.empty(1, dtype=torch.int32, device=dev)
    counts = torch.empty(num_experts, dtype=torch.int32, device=dev)
    cursor = torch.empty(num_experts, dtype=torch.int32, device=dev)
    blk = 1024
    _align_init_kernel[(triton.cdiv(max(sorted_len, num_experts), blk),)](
        sorted_ids, counts, sorted_len, num_experts, n, BLOCK=blk)
    _align_count_kernel[(triton.cdiv(n, blk),)](ids, counts, n, BLOCK=blk)
    e_pow2 = _next_pow2(num_experts)
    _align_prefix_kernel[(1,)](counts, cursor, expert_ids, padded_len, num_experts, max_blocks,
                               BLOCK_M=block_m, E_POW2=e_pow2, CHUNK=max(16, 8192 // e_pow2),
                               num_warps=4)
    _align_scatter_kernel[(triton.cdiv(n, blk),)](ids, cursor, sorted_ids, n, BLOCK=blk)
    return Align(sorted_ids, expert_ids, padded_len, max_blocks, block_m)


# ---------------------------------------------------------------------------------------------
# 2./4. the gather-by-index grouped GEMM over (m-block, n-block) tiles
# ---------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["num_valid", "num_m_blocks"])
def _moe_gemm_kernel(a_ptr, b_ptr, c_ptr, w_ptr, sorted_ids_ptr, expert_ids_ptr, padded_len_ptr,
                     N, K, num_valid, num_m_blocks, a_row_div,
                     stride_am, stride_be, stride_bn, stride_cm,
                     MUL_W: tl.constexpr, EVEN_K: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    # C[pair, :] = A[pair // a_row_div, :] @ B[expert(pair)]^T  (B stored [E, N, K], K-contiguous)
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    tiles_per_group = GROUP_M * num_n
    group = pid // tiles_per_group
    first_m = group * GROUP_M
    group_rows = tl.minimum(num_m_blocks - first_m, GROUP_M)
    in_group = pid % tiles_per_group
    pid_m = first_m + in_group % group_rows
    pid_n = in_group // group_rows

    padded_len = tl.load(padded_len_ptr)
    if pid_m * BLOCK_M >= padded_len:
        return

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ids_ptr + rows)
    valid = pair < num_valid
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    a_rows = (pair // a_row_div).to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_nb = offs_n % N  # loads stay in bounds; the store masks
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    b_ptrs = (b_ptr + expert * stride_be + offs_nb[None, :].to(tl.int64) * stride_bn
              + offs_k[:, None])

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kb in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=valid[:, None], other=0.0)
            b = tl.load(b_ptrs)
        else:
            k_left = K - kb * BLOCK_K
            a = tl.load(a_ptrs, mask=valid[:, None] & (offs_k[None, :] < k_left), other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc=acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    if MUL_W:
        w = tl.load(w_ptr + pair, mask=valid, other=0.0)
        acc = acc * w[:, None]
    c = acc.to(c_ptr.dtype.element_ty)
    c_ptrs = c_ptr + pair.to(tl.int64)[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, c, mask=valid[:, None] & (offs_n[None, :] < N))


def _moe_gemm(a, b, c, weights_flat, align, a_row_div, mul_w, tile):
    bm, bn, bk, gm, warps, stages = tile
    assert align.block_m == bm, "align was built for another BLOCK_M"
    n, k = b.shape[1], b.shape[2]
    grid = (align.max_blocks * triton.cdiv(n, bn),)
    _moe_gemm_kernel[grid](
        a, b, c, weights_flat, align.sorted_ids, align.expert_ids, align.padded_len,
        n, k, c.shape[0], align.max_blocks, a_row_div,
        a.stride(0), b.stride(0), b.stride(1), c.stride(0),
        MUL_W=mul_w, EVEN_K=(k % bk == 0),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm,
        num_warps=warps, num_stages=stages)


# ---------------------------------------------------------------------------------------------
# 3. silu(gate) * up
# ---------------------------------------------------------------------------------------------
@triton.jit
def _silu_mul_kernel(h_ptr, y_ptr, inter, stride_h, stride_y, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < inter
    g = tl.load(h_ptr + row * stride_h + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(h_ptr + row * stride_h + inter + cols, mask=m, other=0.0).to(tl.float32)
    y = g * tl.sigmoid(g) * u
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=m)


def fused_experts(x, w13, w2, topk_weights, topk_ids, align, tile):
    """x [T, H] bf16; w13 [E, 2I, H] (gate rows, then up rows); w2 [E, H, I];
    topk_weights [T, k] fp32; topk_ids [T, k] int32; align from align_block_size(tile's BLOCK_M)."""
    t, h = x.shape
    k = topk_ids.shape[1]
    n1 = w13.shape[1]
    inter = n1 // 2
    m = t * k
    wflat = topk_weights.reshape(-1)
    if wflat.dtype != torch.float32:
        wflat = wflat.float()
    wflat = wflat.contiguous()
    gate_up = torch.empty((m, n1), dtype=x.dtype, device=x.device)
    _moe_gemm(x, w13, gate_up, wflat, align, k, False, tile)
    act = torch.empty((m, inter), dtype=x.dtype, device=x.device)
    blk = 1024
    _silu_mul_kernel[(m, triton.cdiv(inter, blk))](gate_up, act, inter, gate_up.stride(0),
                                                   act.stride(0), BLOCK=blk, num_warps=4)
    out_k = torch.empty((m, h), dtype=x.dtype, device=x.device)
    _moe_gemm(act, w2, out_k, wflat, align, 1, True, tile)
    return out_k.view(t, k, h).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# read bandwidth: a read-only reduction (each program sums its chunk; one float per program out)
# ---------------------------------------------------------------------------------------------
@triton.jit
def _read_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    base = pid * (BLOCK * ITERS)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(ITERS):
        offs = base + i * BLOCK + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid, tl.sum(acc, 0))


def read_sum(buf, partial=None):
    """Reads every element of the 1-D tensor `buf` once; returns the per-program partial sums."""
    n = buf.numel()
    blk, iters = 4096, 8
    programs = triton.cdiv(n, blk * iters)
    if partial is None or partial.numel() < programs:
        partial = torch.empty(programs, dtype=torch.float32, device=buf.device)
    _read_sum_kernel[(programs,)](buf, partial, n, BLOCK=blk, ITERS=iters, num_warps=8)
    return partial
