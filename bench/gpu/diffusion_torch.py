"""FLUX transformer forward and AutoencoderKL decode as diffusers defines them, without diffusers.

The model code is written once over a small backend (`ops`): TorchOps (the GPU run: bf16 timing
and the float32 reference, bench/gpu/diffusion_ref.py) and NumpyOps (float64, for checking this
file against the repo's tiny fixtures, which real diffusers produced, where there is no torch:
`python3 bench/gpu/diffusion_torch.py --check`). Weights are a dict name -> array with diffusers'
state-dict names; configs are diffusers' config.json dicts.

Followed (diffusers 0.40.0.dev0, the version that made test/fixtures/flux-dit-tiny and vae-tiny):
  models/transformers/transformer_flux.py  FluxTransformer2DModel, FluxTransformerBlock,
      FluxSingleTransformerBlock, FluxAttention + FluxAttnProcessor, FluxPosEmbed
  models/embeddings.py  get_timestep_embedding (Timesteps(256, flip_sin_to_cos=True,
      downscale_freq_shift=0)), TimestepEmbedding, PixArtAlphaTextProjection (silu),
      CombinedTimestep[Guidance]TextProjEmbeddings, get_1d_rotary_pos_embed (float64 freqs,
      repeat_interleave_real), apply_rotary_emb (use_real, unbind dim -1, sequence_dim 1)
  models/normalization.py  AdaLayerNormZero, AdaLayerNormZeroSingle, AdaLayerNormContinuous
      (chunk order scale, shift), LayerNorm eps 1e-6 without affine; q/k norms torch.nn.RMSNorm
      eps 1e-6
  models/autoencoders/autoencoder_kl.py + vae.py (Decoder), unets/unet_2d_blocks.py
      (UNetMidBlock2D, UpDecoderBlock2D), resnet.py (ResnetBlock2D), upsampling.py (Upsample2D:
      nearest x2 + conv 3x3), attention_processor.py (Attention with group_norm, one head of
      width C over the H*W tokens, residual connection, AttnProcessor2_0)
"""
import json
import math
import os
import struct
import sys

# ------------------------------------------------------------------ backends


class TorchOps:
    """torch.nn.functional, with diffusers' dtype behaviour (bf16 weights: bf16 compute)."""

    def __init__(self, torch):
        import torch.nn.functional as F

        self.torch = torch
        self.F = F

    def linear(self, x, w, b):
        return self.F.linear(x, w, b)

    def silu(self, x):
        return self.F.silu(x)

    def gelu_tanh(self, x):
        return self.F.gelu(x, approximate="tanh")

    def layer_norm(self, x, eps):
        return self.F.layer_norm(x, (x.shape[-1],), eps=eps)

    def rms_norm(self, x, w, eps):  # torch.nn.RMSNorm(dim, eps) as FluxAttention's norm_q/norm_k
        return self.F.rms_norm(x, (x.shape[-1],), w, eps)

    def group_norm(self, x, groups, w, b, eps):
        return self.F.group_norm(x, groups, w, b, eps)

    def conv2d(self, x, w, b, padding):
        return self.F.conv2d(x, w, b, padding=padding)

    def upsample2x(self, x):
        return self.F.interpolate(x, scale_factor=2.0, mode="nearest")

    def attention(self, q, k, v):
        """q, k, v [B, S, H, D] -> [B, S, H, D] (diffusers' native dispatch: SDPA on [B, H, S, D])."""
        o = self.F.scaled_dot_product_attention(q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3))
        return o.permute(0, 2, 1, 3)

    def cat(self, xs, axis):
        return self.torch.cat(xs, dim=axis)

    def permute(self, x, axes):
        return x.permute(*axes)

    def like(self, x, ref):
        return x.to(ref.dtype)

    def timestep_proj(self, t, dim):
        """get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0): [N, dim] float32."""
        torch = self.torch
        half = dim // 2
        exponent = -math.log(10000) * torch.arange(0, half, dtype=torch.float32, device=t.device)
        exponent = exponent / (half - 0)
        emb = torch.exp(exponent)
        emb = t[:, None].float() * emb[None, :]
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
        return torch.cat([emb[:, half:], emb[:, :half]], dim=-1)

    def rope(self, ids, axes_dims, theta):
        """FluxPosEmbed: (cos, sin), each [S, sum(axes_dims)] float32."""
        torch = self.torch
        pos = ids.float()
        cos_out, sin_out = [], []
        for i, dim in enumerate(axes_dims):
            freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device)[: dim // 2] / dim))
            freqs = torch.outer(pos[:, i], freqs)  # float64 (float32 x float64 promotes)
            cos_out.append(freqs.cos().repeat_interleave(2, dim=1).float())
            sin_out.append(freqs.sin().repeat_interleave(2, dim=1).float())
        return torch.cat(cos_out, dim=-1), torch.cat(sin_out, dim=-1)

    def apply_rope(self, x, rope):
        """apply_rotary_emb(x [B, S, H, D], (cos, sin), use_real, unbind dim -1, sequence_dim=1)."""
        cos, sin = rope
        cos = cos[None, :, None, :]
        sin = sin[None, :, None, :]
        x_real, x_imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        x_rot = self.torch.stack([-x_imag, x_real], dim=-1).flatten(3)
        return (x.float() * cos + x_rot.float() * sin).to(x.dtype)


class NumpyOps:
    """The same math in float64 numpy (the timestep embedding's arguments rounded as float32, as diffusers)."""

    def __init__(self, np):
        self.np = np

    def linear(self, x, w, b):
        y = x @ w.T
        return y if b is None else y + b

    def silu(self, x):
        return x / (1 + self.np.exp(-x))

    def gelu_tanh(self, x):
        np = self.np
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    def layer_norm(self, x, eps):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / self.np.sqrt(v + eps)

    def rms_norm(self, x, w, eps):
        return x / self.np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def group_norm(self, x, groups, w, b, eps):
        B, C = x.shape[:2]
        g = x.reshape(B, groups, -1)
        m = g.mean(-1, keepdims=True)
        v = ((g - m) ** 2).mean(-1, keepdims=True)
        y = ((g - m) / self.np.sqrt(v + eps)).reshape(x.shape)
        bshape = (1, C) + (1,) * (x.ndim - 2)
        return y * w.reshape(bshape) + b.reshape(bshape)

    def conv2d(self, x, w, b, padding):
        np = self.np
        k = w.shape[-1]
        xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))  # [B, C, H, W, k, k]
        y = np.einsum("bchwij,ocij->bohw", win, w)
        return y + b[None, :, None, None]

    def upsample2x(self, x):
        return x.repeat(2, axis=2).repeat(2, axis=3)

    def attention(self, q, k, v):
        np = self.np
        s = np.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
        s = s - s.max(-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(-1, keepdims=True)
        return np.einsum("bhst,bthd->bshd", p, v)

    def cat(self, xs, axis):
        return self.np.concatenate(xs, axis=axis)

    def permute(self, x, axes):
        return x.transpose(axes)

    def like(self, x, ref):
        return x

    def timestep_proj(self, t, dim):
        np = self.np
        f32 = np.float32
        half = dim // 2
        exponent = (f32(-math.log(10000)) * np.arange(half, dtype=f32)) / f32(half)
        emb = np.exp(exponent.astype(f32)).astype(f32)
        arg = (t.astype(f32)[:, None] * emb[None, :]).astype(f32).astype(np.float64)
        emb = np.concatenate([np.sin(arg), np.cos(arg)], axis=-1)
        return np.concatenate([emb[:, half:], emb[:, :half]], axis=-1)

    def rope(self, ids, axes_dims, theta):
        np = self.np
        pos = ids.astype(np.float32).astype(np.float64)
        cos_out, sin_out = [], []
        for i, dim in enumerate(axes_dims):
            freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64)[: dim // 2] / dim))
            freqs = np.outer(pos[:, i], freqs)
            cos_out.append(np.repeat(np.cos(freqs), 2, axis=1))
            sin_out.append(np.repeat(np.sin(freqs), 2, axis=1))
        return np.concatenate(cos_out, axis=-1), np.concatenate(sin_out, axis=-1)

    def apply_rope(self, x, rope):
        np = self.np
        cos, sin = rope
        cos = cos[None, :, None, :]
        sin = sin[None, :, None, :]
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        x_real, x_imag = pairs[..., 0], pairs[..., 1]
        x_rot = np.stack([-x_imag, x_real], axis=-1).reshape(x.shape)
        return x * cos + x_rot * sin


# ------------------------------------------------------------------ FLUX transformer


def _lin(O, W, name, x):
    return O.linear(x, W[name + ".weight"], W.get(name + ".bias"))


def flux_embed(O, W, cfg, x):
    """x_embedder, time_text_embed, context_embedder, pos_embed -> (hs, ehs, temb, rope)."""
    hs = _lin(O, W, "x_embedder", x["hidden_states"])
    pooled = x["pooled_projections"]
    t = O.like(x["timestep"], hs) * 1000

    def timestep_embedding(prefix, v):
        e = O.like(O.timestep_proj(v, 256), pooled)
        return _lin(O, W, prefix + ".linear_2", O.silu(_lin(O, W, prefix + ".linear_1", e)))

    temb = timestep_embedding("time_text_embed.timestep_embedder", t)
    if cfg.get("guidance_embeds") and x.get("guidance") is not None:
        g = O.like(x["guidance"], hs) * 1000
        temb = temb + timestep_embedding("time_text_embed.guidance_embedder", g)
    p = _lin(O, W, "time_text_embed.text_embedder.linear_1", pooled)
    temb = temb + _lin(O, W, "time_text_embed.text_embedder.linear_2", O.silu(p))
    ehs = _lin(O, W, "context_embedder", x["encoder_hidden_states"])
    txt_ids, img_ids = x["txt_ids"], x["img_ids"]
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    rope = O.rope(O.cat([txt_ids, img_ids], 0), list(cfg.get("axes_dims_rope", (16, 56, 56))), 10000)
    return hs, ehs, temb, rope


def _ada_zero(O, W, name, x, temb, n):
    """AdaLayerNormZero (n=6) / AdaLayerNormZeroSingle (n=3): (modulated x, the n chunks)."""
    emb = _lin(O, W, name + ".linear", O.silu(temb))
    D = x.shape[-1]
    ch = [emb[:, i * D:(i + 1) * D] for i in range(n)]
    shift, scale = ch[0], ch[1]
    return O.layer_norm(x, 1e-6) * (1 + scale[:, None]) + shift[:, None], ch


def _heads(x, head_dim):
    return x.reshape(x.shape[0], x.shape[1], -1, head_dim)


def _qkv(O, W, p, x, names, norms, head_dim):
    q = O.rms_norm(_heads(_lin(O, W, f"{p}.{names[0]}", x), head_dim), W[f"{p}.{norms[0]}.weight"], 1e-6)
    k = O.rms_norm(_heads(_lin(O, W, f"{p}.{names[1]}", x), head_dim), W[f"{p}.{norms[1]}.weight"], 1e-6)
    v = _heads(_lin(O, W, f"{p}.{names[2]}", x), head_dim)
    return q, k, v


def _ff(O, W, p, x):
    return _lin(O, W, p + ".net.2", O.gelu_tanh(_lin(O, W, p + ".net.0.proj", x)))


def flux_double_block(O, W, cfg, i, hs, ehs, temb, rope):
    """FluxTransformerBlock -> (ehs, hs)."""
    p = f"transformer_blocks.{i}"
    hd = cfg["attention_head_dim"]
    n_hs, (_, _, gate_msa, shift_mlp, scale_mlp, gate_mlp) = _ada_zero(O, W, p + ".norm1", hs, temb, 6)
    n_ehs, (_, _, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp) = _ada_zero(O, W, p + ".norm1_context", ehs, temb, 6)
    a = p + ".attn"
    q, k, v = _qkv(O, W, a, n_hs, ("to_q", "to_k", "to_v"), ("norm_q", "norm_k"), hd)
    eq, ek, ev = _qkv(O, W, a, n_ehs, ("add_q_proj", "add_k_proj", "add_v_proj"), ("norm_added_q", "norm_added_k"), hd)
    q = O.apply_rope(O.cat([eq, q], 1), rope)
    k = O.apply_rope(O.cat([ek, k], 1), rope)
    v = O.cat([ev, v], 1)
    o = O.attention(q, k, v)
    o = o.reshape(o.shape[0], o.shape[1], -1)
    lt = ehs.shape[1]
    attn_out = _lin(O, W, a + ".to_out.0", o[:, lt:])
    ctx_out = _lin(O, W, a + ".to_add_out", o[:, :lt])

    hs = hs + gate_msa[:, None] * attn_out
    n2 = O.layer_norm(hs, 1e-6) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    hs = hs + gate_mlp[:, None] * _ff(O, W, p + ".ff", n2)

    ehs = ehs + c_gate_msa[:, None] * ctx_out
    n2c = O.layer_norm(ehs, 1e-6) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
    ehs = ehs + c_gate_mlp[:, None] * _ff(O, W, p + ".ff_context", n2c)
    return ehs, hs


def flux_single_block(O, W, cfg, i, hs, ehs, temb, rope):
    """FluxSingleTransformerBlock -> (ehs, hs)."""
    p = f"single_transformer_blocks.{i}"
    hd = cfg["attention_head_dim"]
    lt = ehs.shape[1]
    h = O.cat([ehs, hs], 1)
    n, (_, _, gate) = _ada_zero(O, W, p + ".norm", h, temb, 3)
    mlp = O.gelu_tanh(_lin(O, W, p + ".proj_mlp", n))
    q, k, v = _qkv(O, W, p + ".attn", n, ("to_q", "to_k", "to_v"), ("norm_q", "norm_k"), hd)
    o = O.attention(O.apply_rope(q, rope), O.apply_rope(k, rope), v)
    o = o.reshape(o.shape[0], o.shape[1], -1)
    h = h + gate[:, None] * _lin(O, W, p + ".proj_out", O.cat([o, mlp], 2))
    return h[:, :lt], h[:, lt:]


def flux_out(O, W, cfg, hs, temb):
    """norm_out (AdaLayerNormContinuous: scale, shift) and proj_out."""
    emb = _lin(O, W, "norm_out.linear", O.like(O.silu(temb), hs))
    D = hs.shape[-1]
    scale, shift = emb[:, :D], emb[:, D:]
    hs = O.layer_norm(hs, 1e-6) * (1 + scale)[:, None, :] + shift[:, None, :]
    return _lin(O, W, "proj_out", hs)


def flux_forward(O, W, cfg, x):
    hs, ehs, temb, rope = flux_embed(O, W, cfg, x)
    for i in range(cfg["num_layers"]):
        ehs, hs = flux_double_block(O, W, cfg, i, hs, ehs, temb, rope)
    for i in range(cfg["num_single_layers"]):
        ehs, hs = flux_single_block(O, W, cfg, i, hs, ehs, temb, rope)
    return flux_out(O, W, cfg, hs, temb)


# ------------------------------------------------------------------ AutoencoderKL decode


def _conv(O, W, name, x, padding):
    return O.conv2d(x, W[name + ".weight"], W[name + ".bias"], padding)


def _gn(O, W, name, x, groups):
    return O.group_norm(x, groups, W[name + ".weight"], W[name + ".bias"], 1e-6)


def vae_resnet(O, W, p, x, groups):
    """ResnetBlock2D (no temb, output_scale_factor 1)."""
    h = _conv(O, W, p + ".conv1", O.silu(_gn(O, W, p + ".norm1", x, groups)), 1)
    h = _conv(O, W, p + ".conv2", O.silu(_gn(O, W, p + ".norm2", h, groups)), 1)
    if p + ".conv_shortcut.weight" in W:
        x = _conv(O, W, p + ".conv_shortcut", x, 0)
    return x + h


def vae_attention(O, W, p, x, groups):
    """Attention(C, heads 1, dim_head C, group_norm, residual_connection) on [B, C, H, W]."""
    B, C, H, Wd = x.shape
    h = _gn(O, W, p + ".group_norm", x, groups)
    h = O.permute(h.reshape(B, C, H * Wd), (0, 2, 1))  # [B, HW, C]
    q = _lin(O, W, p + ".to_q", h).reshape(B, H * Wd, 1, C)
    k = _lin(O, W, p + ".to_k", h).reshape(B, H * Wd, 1, C)
    v = _lin(O, W, p + ".to_v", h).reshape(B, H * Wd, 1, C)
    o = _lin(O, W, p + ".to_out.0", O.attention(q, k, v).reshape(B, H * Wd, C))
    return O.permute(o, (0, 2, 1)).reshape(B, C, H, Wd) + x


def vae_decode(O, W, cfg, z):
    """AutoencoderKL.decode(z).sample (post_quant_conv, Decoder; no scaling/shift applied)."""
    groups = cfg.get("norm_num_groups", 32)
    levels = len(cfg["block_out_channels"])
    lpb = cfg.get("layers_per_block", 2)
    if cfg.get("use_post_quant_conv", True) and "post_quant_conv.weight" in W:
        z = _conv(O, W, "post_quant_conv", z, 0)
    x = _conv(O, W, "decoder.conv_in", z, 1)
    x = vae_resnet(O, W, "decoder.mid_block.resnets.0", x, groups)
    if cfg.get("mid_block_add_attention", True):
        x = vae_attention(O, W, "decoder.mid_block.attentions.0", x, groups)
    x = vae_resnet(O, W, "decoder.mid_block.resnets.1", x, groups)
    for i in range(levels):
        for j in range(lpb + 1):
            x = vae_resnet(O, W, f"decoder.up_blocks.{i}.resnets.{j}", x, groups)
        if i < levels - 1:
            x = _conv(O, W, f"decoder.up_blocks.{i}.upsamplers.0.conv", O.upsample2x(x), 1)
    x = O.silu(_gn(O, W, "decoder.conv_norm_out", x, groups))
    return _conv(O, W, "decoder.conv_out", x, 1)


# ------------------------------------------------------------------ state-dict names and shapes


def flux_shapes(cfg):
    """FluxTransformer2DModel's state dict [(name, shape)] (patch_size 1), as bench/diffusion.ts fluxTensorShapes."""
    D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    hd = cfg["attention_head_dim"]
    cin = cfg["in_channels"]
    cout = cfg.get("out_channels") or cin
    out = []

    def lin(n, o, i):
        out.extend([(n + ".weight", [o, i]), (n + ".bias", [o])])

    lin("x_embedder", D, cin)
    lin("context_embedder", D, cfg["joint_attention_dim"])
    for e in ["timestep_embedder"] + (["guidance_embedder"] if cfg.get("guidance_embeds") else []):
        lin(f"time_text_embed.{e}.linear_1", D, 256)
        lin(f"time_text_embed.{e}.linear_2", D, D)
    lin("time_text_embed.text_embedder.linear_1", D, cfg["pooled_projection_dim"])
    lin("time_text_embed.text_embedder.linear_2", D, D)
    for i in range(cfg["num_layers"]):
        p = f"transformer_blocks.{i}"
        lin(p + ".norm1.linear", 6 * D, D)
        lin(p + ".norm1_context.linear", 6 * D, D)
        for n in ["to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"]:
            lin(f"{p}.attn.{n}", D, D)
        for n in ["norm_q", "norm_k", "norm_added_q", "norm_added_k"]:
            out.append((f"{p}.attn.{n}.weight", [hd]))
        for f in ["ff", "ff_context"]:
            lin(f"{p}.{f}.net.0.proj", 4 * D, D)
            lin(f"{p}.{f}.net.2", D, 4 * D)
    for i in range(cfg["num_single_layers"]):
        p = f"single_transformer_blocks.{i}"
        lin(p + ".norm.linear", 3 * D, D)
        lin(p + ".proj_mlp", 4 * D, D)
        lin(p + ".proj_out", D, 5 * D)
        for n in ["to_q", "to_k", "to_v"]:
            lin(f"{p}.attn.{n}", D, D)
        for n in ["norm_q", "norm_k"]:
            out.append((f"{p}.attn.{n}.weight", [hd]))
    lin("norm_out.linear", 2 * D, D)
    lin("proj_out", cout, D)
    return out


def vae_shapes(cfg):
    """AutoencoderKL's state dict [(name, shape)] (DownEncoderBlock2D / UpDecoderBlock2D), as bench/diffusion.ts vaeTensorShapes."""
    b = list(cfg["block_out_channels"])
    lpb = cfg.get("layers_per_block", 2)
    lat = cfg["latent_channels"]
    out = []

    def conv(n, o, i, k):
        out.extend([(n + ".weight", [o, i, k, k]), (n + ".bias", [o])])

    def norm(n, c):
        out.extend([(n + ".weight", [c]), (n + ".bias", [c])])

    def lin(n, o, i):
        out.extend([(n + ".weight", [o, i]), (n + ".bias", [o])])

    def resnet(p, cin, cout):
        norm(p + ".norm1", cin)
        conv(p + ".conv1", cout, cin, 3)
        norm(p + ".norm2", cout)
        conv(p + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(p + ".conv_shortcut", cout, cin, 1)

    def mid(half):
        c = b[-1]
        resnet(f"{half}.mid_block.resnets.0", c, c)
        if cfg.get("mid_block_add_attention", True):
            norm(f"{half}.mid_block.attentions.0.group_norm", c)
            for n in ["to_q", "to_k", "to_v", "to_out.0"]:
                lin(f"{half}.mid_block.attentions.0.{n}", c, c)
        resnet(f"{half}.mid_block.resnets.1", c, c)

    conv("encoder.conv_in", b[0], cfg.get("in_channels", 3), 3)
    cin = b[0]
    for i, cout in enumerate(b):
        for j in range(lpb):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
        if i < len(b) - 1:
            conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", cout, cout, 3)
        cin = cout
    mid("encoder")
    norm("encoder.conv_norm_out", b[-1])
    conv("encoder.conv_out", 2 * lat, b[-1], 3)
    if cfg.get("use_quant_conv", True):
        conv("quant_conv", 2 * lat, 2 * lat, 1)
    if cfg.get("use_post_quant_conv", True):
        conv("post_quant_conv", lat, lat, 1)
    conv("decoder.conv_in", b[-1], lat, 3)
    mid("decoder")
    rev = b[::-1]
    prev = rev[0]
    for i, cout in enumerate(rev):
        for j in range(lpb + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", prev if j == 0 else cout, cout)
        if i < len(rev) - 1:
            conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", cout, cout, 3)
        prev = cout
    norm("decoder.conv_norm_out", b[0])
    conv("decoder.conv_out", cfg.get("out_channels", 3), b[0], 3)
    return out


def init_kind(name, shapes_by_name):
    """How a random tensor is drawn: ('norm_weight',) 1 +- 0.1, ('norm_bias',) +- 0.1, or ('uniform', bound)
    with bound 1/sqrt(fan_in) of the weight (PyTorch's default Linear/Conv2d bound; a bias uses its weight's)."""
    shape = shapes_by_name[name]
    if name.endswith(".weight") and len(shape) == 1:
        return ("norm_weight",)
    if name.endswith(".bias"):
        w = shapes_by_name.get(name[: -len(".bias")] + ".weight")
        if w is not None and len(w) == 1:
            return ("norm_bias",)
        if w is not None:
            return ("uniform", 1 / math.sqrt(math.prod(w[1:])))
    return ("uniform", 1 / math.sqrt(math.prod(shape[1:]) if len(shape) > 1 else shape[0]))


# ------------------------------------------------------------------ safetensors (numpy side)

_NP_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def read_safetensors_np(path):
    """{name: float64 array} (F32/F64/F16/BF16) with only the stdlib and numpy."""
    import numpy as np

    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        raw = buf[base + a:base + b]
        if t["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_NP_DTYPES[t["dtype"]])
        out[name] = arr.reshape(t["shape"]).astype(np.float64)
    return out


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


FIXTURES = {
    # name: (output entry, its inputs in expected.safetensors)
    "flux-dit-tiny": "sample",
    "vae-tiny": "decoded",
}


def fixture_dir(root, name):
    return os.path.join(root, "test", "fixtures", name)


def run_fixture(O, root, name, load, to_float):
    """Our re-implementation on a tiny fixture vs the output diffusers gave: dict with rel (max|err|/max|ref|)."""
    d = fixture_dir(root, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    W = load(os.path.join(d, "model.safetensors"))
    E = load(os.path.join(d, "expected.safetensors"))
    key = FIXTURES[name]
    want_names = sorted(n for n, _ in (flux_shapes(cfg) if name.startswith("flux") else vae_shapes(cfg)))
    names_match = want_names == sorted(W.keys())
    if name.startswith("flux"):
        got = flux_forward(O, W, cfg, {k: v for k, v in E.items() if k != key})
    else:
        got = vae_decode(O, W, cfg, E["latents"])
    got, ref = to_float(got), to_float(E[key])
    if list(got.shape) != list(ref.shape):
        return {"fixture": name, "output": key, "pass": False, "error": f"shape {list(got.shape)} vs {list(ref.shape)}", "names_match": names_match}
    max_err = float(abs(got - ref).max())
    max_ref = float(abs(ref).max())
    rel = max_err / max_ref
    return {"fixture": name, "output": key, "shape": list(ref.shape), "max_err": max_err, "max_ref": max_ref, "rel": rel,
            "pass": bool(rel <= 1e-4), "names_match": names_match}


def main_check():
    """Local check without torch: the numpy backend on the tiny fixtures, and the state-dict name lists."""
    import numpy as np

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    ok = True
    for name in FIXTURES:
        d = fixture_dir(root, name)
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        h = safetensors_header(os.path.join(d, "model.safetensors"))
        mine = dict((n, s) for n, s in (flux_shapes(cfg) if name.startswith("flux") else vae_shapes(cfg)))
        theirs = {n: t["shape"] for n, t in h.items()}
        same = mine == theirs
        print(f"{name}: state-dict names/shapes {'match' if same else 'DIFFER'} ({len(mine)} vs {len(theirs)})")
        if not same:
            ok = False
            print("  only ours:", sorted(set(mine) - set(theirs))[:10], " only theirs:", sorted(set(theirs) - set(mine))[:10])
            print("  shape diffs:", [(n, mine[n], theirs[n]) for n in mine if n in theirs and mine[n] != theirs[n]][:10])
        r = run_fixture(NumpyOps(np), root, name, read_safetensors_np, lambda a: np.asarray(a, dtype=np.float64))
        print(f"{name}: numpy float64 vs diffusers: {json.dumps(r)}")
        ok = ok and r["pass"]
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(main_check())
    print(__doc__)
