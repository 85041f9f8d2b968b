"""The programs ``smoke`` runs inside the fresh venv, natively and on the floor CPU (smoke.py)."""

from __future__ import annotations

# Runs inside the fresh venv; prints one JSON line.  Real vLLM depends on
# torch and its _C needs torch loaded first, so _C is only exercised when the
# installed package does not require torch (the fixture).
PROBE = r'''
import importlib.metadata as md, json, re, sys
r = {"python": sys.version.split()[0]}
def dist_version(prefix):
    for d in md.distributions():
        n = re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower()
        if n == prefix:
            return d
try:
    r["vllm_version_before"] = md.version("vllm")
except md.PackageNotFoundError:
    r["vllm_version_before"] = None
ours = dist_version(sys.argv[1])
r["dist_version"] = ours.version if ours else None
r["requires_torch"] = any(re.match(r"torch\b", q) for q in (ours.requires or [])) if ours else None
import vllm
r["vllm_file"] = vllm.__file__
try:
    r["vllm_version"] = md.version("vllm")
except md.PackageNotFoundError:
    r["vllm_version"] = None
from vllm.platforms import current_platform
r["platform"] = type(current_platform).__name__
r["device_type"] = getattr(current_platform, "device_type", None)
r["is_cpu"] = bool(current_platform.is_cpu())
if r["requires_torch"]:
    import torch
    r["torch_version"] = torch.__version__
if not r["requires_torch"]:
    import importlib.util
    if importlib.util.find_spec("vllm._C") is not None:
        from vllm import _C
        if hasattr(_C, "compiled_isa"):
            r["compiled_isa"] = list(_C.compiled_isa())
        if hasattr(_C, "selftest"):
            print("running vllm._C.selftest()", file=sys.stderr, flush=True)
            r["selftest"] = _C.selftest()
print(json.dumps(r))
'''

# One compiled module of real vLLM, in a process of its own: upstream's x86
# modules (0.17+) all register the torch op namespace "_C", so two in one
# process collide.  load_library dlopens whatever the PyInit name is.
KERNEL = r'''
import json, sys
path, run = sys.argv[1], sys.argv[2] == "1"
r = {"module": path}
import torch
torch.ops.load_library(path)
r["loaded"] = True
stem = path.rsplit("/", 1)[-1].split(".")[0]
ns = next((n for n in ("_C", stem) if hasattr(getattr(torch.ops, n), "rms_norm")), None)
if ns is None:
    r["kernel"] = None
elif run:
    torch.manual_seed(0)
    x = torch.randn(4, 256, dtype=torch.float32)
    w = torch.rand(256, dtype=torch.float32) + 0.5
    out = torch.empty_like(x)
    print(f"calling torch.ops.{ns}.rms_norm from {stem}", file=sys.stderr, flush=True)
    getattr(torch.ops, ns).rms_norm(out, x, w, 1e-6)
    ref = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
    r["kernel"] = f"torch.ops.{ns}.rms_norm"
    r["max_abs_err"] = float((out - ref).abs().max())
    r["ok"] = bool(torch.allclose(out, ref, atol=1e-4, rtol=1e-4))
else:
    r["kernel"] = f"torch.ops.{ns}.rms_norm (not run: this CPU lacks the module's ISA)"
print(json.dumps(r))
'''

# A tiny Llama made here (no download): vLLM's greedy tokens must be Hugging Face's.
INFERENCE = r'''
import json, os, sys, time
work = sys.argv[1]
t0 = time.monotonic()
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
words = ("the cpu wheel runs a tiny model on every core with vectors and caches while the scheduler "
         "batches requests and the kernel computes attention over keys and values").split()
corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(200)]
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=256, special_tokens=["<unk>", "<s>", "</s>"]))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
model_dir = os.path.join(work, "tiny-llama")
fast.save_pretrained(model_dir)
cfg = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, torch_dtype="float32")
torch.manual_seed(0)
LlamaForCausalLM(cfg).eval().save_pretrained(model_dir, safe_serialization=True)
prompts = ["the cpu wheel runs", "attention over keys and"]
hf = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
want = []
for p in prompts:
    ids = fast(p, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    want.append(out[0, ids.shape[1]:].tolist())
t1 = time.monotonic()
from vllm import LLM, SamplingParams
llm = LLM(model=model_dir, dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
got = [o.outputs[0].token_ids for o in llm.generate(
    prompts, SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))]
got = [list(g) for g in got]
print(json.dumps({"hf": want, "vllm": got, "equal": got == want, "model_seconds": round(t1 - t0, 1),
                  "vllm_seconds": round(time.monotonic() - t1, 1)}))
'''
