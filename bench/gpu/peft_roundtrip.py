"""Checks that an adapter written by `emovlm tune --lora` loads in the Python reference stack
(transformers + PEFT) unchanged, and that PEFT's merge equals `emovlm lora merge`.

    python3 peft_roundtrip.py BASE_DIR ADAPTER_DIR MERGED_DIR

Prints one line per check and exits non-zero when one fails."""
import re
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Qwen2VLForConditionalGeneration

base_dir, adapter_dir, merged_dir = sys.argv[1:4]
failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    failures += 0 if ok else 1


def lm_key(name):
    """(layer, projection, part) of a language-model attention tensor name, else None."""
    if "visual" in name:
        return None
    m = re.search(r"layers\.(\d+)\.self_attn\.([qkvo])_proj\.(lora_A|lora_B|weight|bias)", name)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


base = Qwen2VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
model = PeftModel.from_pretrained(base, adapter_dir)
ours = {lm_key(k): v for k, v in load_file(adapter_dir + "/adapter_model.safetensors").items() if lm_key(k)}
loaded = {lm_key(k): v for k, v in model.state_dict().items() if "lora_" in k and lm_key(k)}
check(len(ours) > 0 and set(ours) == set(loaded), f"PEFT found every adapter matrix ({len(ours)} in the file, {len(loaded)} loaded)")
check(all(torch.equal(ours[k].float(), loaded[k].float()) for k in ours if k in loaded), "the loaded matrices equal the file's")
check(any(v.abs().max() > 0 for k, v in ours.items() if k[2] == "lora_B"), "the adapter is trained (B is not zero)")

ids = torch.tensor([[151644, 872, 198, 9707, 11, 1879, 0, 151645, 198]])
ids = ids.clamp(max=base.config.get_text_config().vocab_size - 1)
with torch.no_grad():
    peft_logits = model(input_ids=ids).logits
    merged = model.merge_and_unload()
    merged_sd = {lm_key(k): v for k, v in merged.state_dict().items() if lm_key(k)}
ours_merged = {lm_key(k): v for k, v in load_file(merged_dir + "/model.safetensors").items() if lm_key(k)}
diff = max((merged_sd[k].float() - ours_merged[k].float()).abs().max().item() for k in ours_merged)
check(set(merged_sd) == set(ours_merged) and diff < 1e-6, f"PEFT's merge equals `emovlm lora merge` (max |diff| {diff:.2e})")
reloaded = Qwen2VLForConditionalGeneration.from_pretrained(merged_dir, dtype=torch.float32)
with torch.no_grad():
    rl = reloaded(input_ids=ids).logits
rel = ((rl - peft_logits).abs().max() / peft_logits.abs().max()).item()
check(rel < 1e-5, f"transformers loads the merged checkpoint; its logits equal PEFT's (rel {rel:.2e})")
sys.exit(1 if failures else 0)
