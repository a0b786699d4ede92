#!/usr/bin/env python3
"""The Match loop of `scripts/run --demo`.

Every second: reads the sample prompts kvindex-sim writes (--prompts_file: system prompts
plus a question, conversations plus a turn, a novel prompt, each with the simulator's
ground truth), asks kvindex-server which pods hold each prompt's longest cached prefix
(`kvindex match --json`), and prints the routing decision: pod, cached tokens, GPU/CPU
blocks, next to what the simulator says. Stops after --seconds (0: on SIGINT/SIGTERM) and
exits 1 when --seconds was given and no answer had cached tokens.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time


def short(pod):
    return pod.split("/", 1)[-1]


def pick(prompts, round_number):
    """One system prompt, two conversations and the novel prompt, rotating each round."""
    systems = [p for p in prompts if p["label"].startswith("system-")]
    conversations = [p for p in prompts if p["label"].startswith("conversation-")]
    novel = [p for p in prompts if p["label"] == "novel"]
    chosen = []
    if systems:
        chosen.append(systems[round_number % len(systems)])
    for i in range(min(2, len(conversations))):
        chosen.append(conversations[(2 * round_number + i) % len(conversations)])
    return chosen + novel[:1]


def match(args, model, tokens, workdir):
    path = os.path.join(workdir, "tokens.json")
    with open(path, "w") as f:
        json.dump(tokens, f)
    result = subprocess.run(
        [args.kvindex, "match", "--server", args.server, "--model", model, "--tokens-file", path, "--json",
         "--timeout", "5"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None, result.stderr.strip()
    return json.loads(result.stdout), None


def describe(prompt, answer):
    """One line: the best pod, its cached tokens by tier, the runners-up, and the simulator's truth."""
    head = f"{prompt['label']} ({len(prompt['tokens'])} tokens)"
    pods = answer.get("pods", [])
    truth = prompt.get("expected", [])
    said = f"[sim: {short(truth[0]['pod'])} {truth[0]['matched_tokens']}]" if truth else "[sim: none]"
    if not pods:
        return f"  {head:<34} -> no pod holds its first block: route by load            {said}", False
    best = pods[0]
    # A block held on GPU and CPU counts in both tiers.
    media = sorted(best.get("blocks_by_medium", {}).items(), key=lambda m: (m[0] != "GPU", m[0]))
    tiers = ", ".join(f"{n} on {m}" for m, n in media)
    others = ", ".join(f"{short(p['pod'])} {p.get('matched_tokens', 0)}" for p in pods[1:4])
    line = (f"  {head:<34} -> {short(best['pod'])}: {best.get('matched_tokens', 0)} tokens cached "
            f"({best.get('matched_blocks', 0)} blocks: {tiers})")
    if others:
        line += f"; then {others}"
    return f"{line}   {said}", best.get("matched_tokens", 0) > 0


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kvindex", required=True, help="the kvindex CLI")
    parser.add_argument("--server", required=True, help="kvindex-server host:port")
    parser.add_argument("--prompts", required=True, help="kvindex-sim --prompts_file")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long; 0: until a signal")
    args = parser.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    # Ctrl-C ends the loop even when SIGINT was ignored by whoever started us.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.monotonic()
    answers = cached = 0
    round_number = 0
    with tempfile.TemporaryDirectory(prefix="kvindex-demo-") as workdir:
        try:
            while not stop and (args.seconds <= 0 or time.monotonic() - start < args.seconds):
                tick = time.monotonic()
                try:
                    with open(args.prompts) as f:
                        prompts = json.load(f)
                except (OSError, ValueError):
                    prompts = None  # not written yet, or being replaced
                if prompts:
                    print(f"--- {time.monotonic() - start:5.1f}s: which pod should serve each prompt? "
                          f"(model {prompts['model']})", flush=True)
                    for prompt in pick(prompts["prompts"], round_number):
                        answer, error = match(args, prompts["model"], prompt["tokens"], workdir)
                        if answer is None:
                            print(f"  {prompt['label']}: Match failed: {error}", flush=True)
                            continue
                        line, hit = describe(prompt, answer)
                        answers += 1
                        cached += hit
                        print(line, flush=True)
                    round_number += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))  # pacing, one round a second
        except KeyboardInterrupt:
            pass
    print(f"demo: {cached} of {answers} Match answers had cached tokens", flush=True)
    return 1 if args.seconds > 0 and cached == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
