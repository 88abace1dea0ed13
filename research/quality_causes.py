"""Why the teacher barely follows its captions: cheap checks, one or more per suspect link.

    python -m research.quality_causes vae        # the VAE round trip: which classes survive it
    python -m research.quality_causes text       # the text encoder: do its embeddings name colours and shapes?
    python -m research.quality_causes teacher    # the teacher: does its output depend on the caption?
    python -m research.quality_causes frames     # the teacher per latent frame: latents and empty frames
    python -m research.quality_causes persist    # which captioned shapes the teacher keeps: by size, kind, count
    python -m research.quality_causes binding    # one- vs two-shape captions: are colours bound to shapes?
    python -m research.quality_causes sampler    # the teacher's videos by the re-noise sampler and by the ODE
    python -m research.quality_causes latent     # does the VAE's latent hold shape kinds its decoder loses?
    python -m research.quality_causes geometry   # how far each colour's latent lies from the background's
    python -m research.quality_causes restore    # the teacher from real videos part-noised: where is the caption lost?

Issue 24, item 1 (docs/results.md, "Where the quality goes"). Each check prints its figures and
runs in 1-3 minutes on one thread (latent: about 8; binding --seeds 4: about 5; restore: about 4); evaluation
seed 0's captions and videos unless named.
The teacher checks take --checkpoint, a teacher export (asd-train export), for the shipped teacher,
and --vae, the VAE it was trained on, for the shipped one.
- vae: 32 real videos through the shipped VAE; per colour, where the shape pixels land in the
  evaluator's pixel classes, and per captioned kind what the evaluator reads after the trip.
- text: a ridge probe from the mean-pooled (L, 64) embedding to the caption's colours, kinds and
  (colour, kind) pairs, trained on 300 captions and tested on 200 more, for the shipped encoder
  and a random one of the same size (the floor); and how far one colour word moves the embedding.
- teacher: the flow-matching loss on real latents with the right, a shuffled and an empty caption
  (held-out clips and the teacher's own training pool); then "a <colour> circle" for the 7
  colours from the same noise, 50 steps: which colour the evaluator sees.
- frames: per latent frame, the spread of the teacher's sampled latents against real latents,
  and the share of empty pixel frames in its decoded videos (evaluation seed 0's captions);
  and real latents shrunk by 0.9 (about the teacher's spread), decoded: does that alone empty frames?
- persist: on evaluation seed 0 (as asd-eval), the share of frames in which each captioned shape
  has a significant blob of its colour, by the shape's size, kind and the caption's shape count,
  for the teacher and the VAE round trip: do small shapes (few latent cells) vanish first?
- binding: "a C circle" for the 7 colours and "a C circle and a D square" for 10 colour pairs,
  --seeds noises each: per frame, the share showing each named colour, both at once, a colour
  not named, and colours per frame. Colours bound to shapes: a second colour word brings no
  unnamed colour; blended: it does (docs/results.md, "Where the quality goes", item 3).
- sampler: evaluation seed 0's captions from the same noise, sampled by the few-step sampler asd-eval
  uses (predict x0, re-noise with fresh noise, 50 times) and by the Euler ODE the ode_init stage
  records its trajectories with; each scored by the evaluator.
- latent: a probe reads each shape's kind (circle / square / triangle) from what lies around its
  centre: the shipped encoder's latent cells; the pixels' averages over the same cells (8x8
  pixels and the pixel frames the latent frame covers: what the grid keeps with no learning);
  the round-tripped and the real pixel frame. Trained on 300 videos, tested on 150 others, for
  latent frame 0 (one pixel frame) and latent frames 4 and 8 (four pixel frames each, the shape
  read where it is at the last). Latent far above round trip: the decoder drops kinds the
  latent holds; latent below the averages: the encoder does.
- geometry: one 16-pixel circle per colour (and a blank video) through the encoder; per colour,
  the distance of its latent from the blank video's in the transformer's normalised units, in
  latent frame 0 and averaged over frames 1-8; and per channel, the posterior's std against the
  channel's std over clips (near or above 1: the posterior noise swamps that channel's means). A colour
  close to the background in the latent is a small target for the teacher (docs/results.md,
  "Where the quality goes", item 4). --vae.
- restore: evaluation seed 0's real videos, encoded, noised to sigma 0 (the round trip) ... 1 and denoised by the
  teacher's Euler ODE (50 steps at shift 5, the rest of the grid below that sigma), each level
  scored by the evaluator. Sigma 1 is generation (the sampler check's ODE row); a caption kept
  from a part-noised layout but lost from noise means the teacher binds colours to shapes it is
  shown and fails to lay them out; lost at every level, it does not bind them at all.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from asd_core.cli.evaluate import _load, build_parser
from asd_core.losses import add_noise, flow_matching_loss
from asd_core.sampler import draw_noise, sample_video
from asd_core.schedule import DEFAULT_SHIFT, parse_plan, sigma_to_timestep
from asd_core.toy.defaults import TOY, default_file
from asd_core.toy.domain import (
    BACKGROUND_RGB,
    COLOURS,
    KINDS,
    ShapeSpec,
    VideoSpec,
    caption,
    caption_of_pairs,
    make_batch,
    parse_caption,
    render,
    sample_video_spec,
    trajectory,
)
from asd_core.toy.measures import NO_SHAPE, analyse, caption_pairs, segment
from asd_core.toy.model_eval import (
    EVAL_STREAM,
    eval_captions,
    eval_noise_seeds,
    generate_videos,
    to_uint8,
    vae_round_trip,
)
from asd_core.toy.scores import evaluate_videos
from asd_core.toy.text_encoder import ToyTextConfig, ToyTextEncoder
from asd_core.toy.thresholds import default_min_area
from asd_core.vae import load_codec, pixels_to_video, video_to_pixels
from trainer.rollout import teacher_trajectory
from trainer.stages.data import TRAIN_STREAM

CLASS_NAMES = ("background", *COLOURS)
# Two-shape captions of the binding check: the README's pair first, then every colour once or more.
BINDING_PAIRS = (("red", "blue"), ("green", "yellow"), ("magenta", "cyan"), ("white", "red"), ("blue", "green"),
                 ("yellow", "magenta"), ("cyan", "white"), ("red", "yellow"), ("green", "magenta"), ("blue", "cyan"))


def _teacher(checkpoint: str = "", vae: str = ""):
    """(pipeline, label, guidance) of a teacher export (its text encoder beside it) or the shipped teacher,
    decoding through `vae` (a teacher trained on another VAE's latents) or the shipped VAE.

    The label is the export's path: asd-eval's names only the file, and every export is teacher.safetensors.
    """
    args = ["--checkpoint", checkpoint] if checkpoint else ["--model", "teacher"]
    pipeline, _, cfg = _load(build_parser().parse_args(args + (["--vae", vae] if vae else [])))
    return pipeline, checkpoint or "the shipped teacher", cfg


def check_vae(num: int, vae: str = "") -> None:
    videos, captions = make_batch(EVAL_STREAM, num, TOY.pixel_frames, TOY.height, TOY.width)
    trip = vae_round_trip(videos, load_codec(vae or default_file("vae")), batch=8)
    truth, seen = segment(videos), segment(trip)
    print("shape pixels after the round trip, per true colour: same class / other colour / background / "
          "unassigned (pixels)")
    for k, name in enumerate(COLOURS, start=1):
        m = truth == k
        if m.sum():
            s = seen[m]
            print(f"  {name:8s} {np.mean(s == k):.3f} / {np.mean((s > 0) & (s != k)):.3f} / {np.mean(s == 0):.3f} / "
                  f"{np.mean(s < 0):.3f}  ({m.sum()})")
    bg = seen[truth == 0]
    print(f"  background pixels kept as background: {np.mean(bg == 0):.4f}")
    area = default_min_area(TOY.height, TOY.width)
    read = {kind: np.zeros(len(KINDS) + 2) for kind in KINDS}  # read as each kind, as no shape, as no blob
    for video, pairs in zip(trip, caption_pairs(trip, captions)):
        an = analyse(video, area)
        for colour, kind in pairs:
            col = 1 + COLOURS.index(colour)
            got = np.where(an.count[:, col] > 0, an.kind[:, col], -2)
            for j in range(len(KINDS)):
                read[kind][j] += np.sum(got == j)
            read[kind][len(KINDS)] += np.sum(got == NO_SHAPE)
            read[kind][len(KINDS) + 1] += np.sum(got == -2)
    print("what the evaluator reads for each captioned shape after the round trip (share of frames): "
          + " / ".join(KINDS) + " / no shape / no blob")
    for kind, row in read.items():
        print(f"  {kind:8s} " + " / ".join(f"{v:.3f}" for v in row / row.sum()))


def _ridge_accuracy(x: np.ndarray, y: np.ndarray, train: int) -> float:
    """Held-out per-label accuracy of a ridge probe (threshold 0.5) from features x to 0/1 labels y."""
    x = np.c_[x, np.ones(len(x))]
    a, b = x[:train], y[:train]
    w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ b)
    return float(np.mean((x[train:] @ w > 0.5) == (y[train:] > 0.5)))


def _binding_accuracy(emb: np.ndarray, captions: list[str], train: int) -> float:
    """Held-out accuracy of a ridge probe from a colour word's own token (B, L, D) to the kind it names.

    Tests binding: the colour token must carry which shape it belongs to (3 classes, chance 1/3).
    """
    rows, kinds, split = [], [], []
    for b, text in enumerate(captions):
        words = text.replace(",", " ,").split()
        for pos, word in enumerate(words):
            if word in COLOURS:
                rows.append(emb[b, pos])
                kinds.append(KINDS.index(words[pos + 1]))
                split.append(b < train)
    x, y, split = np.c_[np.array(rows), np.ones(len(rows))], np.eye(len(KINDS))[kinds], np.array(split)
    a, t = x[split], y[split]
    w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ t)
    return float(np.mean((x[~split] @ w).argmax(1) == y[~split].argmax(1)))


def check_text(num: int = 500, train: int = 300) -> None:
    captions = [caption(sample_video_spec(EVAL_STREAM + 100, i)) for i in range(num)]
    pairs = [parse_caption(c) for c in captions]
    y_colour = np.array([[c in {p[0] for p in ps} for c in COLOURS] for ps in pairs], dtype=float)
    y_kind = np.array([[k in {p[1] for p in ps} for k in KINDS] for ps in pairs], dtype=float)
    y_pair = np.array([[(c, k) in ps for c in COLOURS for k in KINDS] for ps in pairs], dtype=float)
    torch.manual_seed(0)
    encoders = {"shipped": ToyTextEncoder.load(default_file("text_encoder")),
                "random (same size)": ToyTextEncoder(ToyTextConfig()).eval()}
    print("ridge probe on the mean-pooled embedding, held-out per-label accuracy "
          f"(train {train}, test {num - train}); majority-label floor in brackets")
    floors = [float(np.mean(np.maximum(y[train:].mean(0), 1 - y[train:].mean(0)))) for y in (y_colour, y_kind, y_pair)]
    swaps = [c.replace(p[0][0], next(x for x in COLOURS if x not in {q[0] for q in p}), 1) for c, p in zip(captions, pairs)]
    for name, enc in encoders.items():
        with torch.no_grad():
            emb = enc.encode(captions)
            mask = (emb.abs().sum(-1) > 0).float()
            pooled = ((emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)).numpy()
            swapped = enc.encode(swaps)
        accs = [_ridge_accuracy(pooled, y, train) for y in (y_colour, y_kind, y_pair)]
        flat, flat_swap = emb.flatten(1), swapped.flatten(1)
        one_word = (flat - flat_swap).norm(dim=1).mean().item()
        other = (flat - flat.roll(1, 0)).norm(dim=1).mean().item()
        bound = _binding_accuracy(emb.numpy(), captions, train)
        print(f"  {name:20s} colours {accs[0]:.3f} [{floors[0]:.3f}]  kinds {accs[1]:.3f} [{floors[1]:.3f}]  "
              f"(colour, kind) pairs {accs[2]:.3f} [{floors[2]:.3f}]  |  one colour word changed moves the "
              f"embedding {one_word / other:.2f}x as far as another caption  |  the kind named after a colour "
              f"word, read from that word's token alone: {bound:.3f} [1/3]")


def check_teacher(num: int, seeds: int, checkpoint: str = "", vae: str = "") -> None:
    torch.manual_seed(0)
    pipeline, _, cfg = _teacher(checkpoint, vae)
    model, enc, codec = pipeline.model, pipeline.text_encoder, pipeline.codec
    print(f"flow-matching loss on real latents ({num} clips, same noise per row), caption: right / shuffled / empty")
    for stream, label in ((EVAL_STREAM, "held-out clips"), (TRAIN_STREAM, "training pool")):
        videos, captions = make_batch(stream, num, TOY.pixel_frames, TOY.height, TOY.width)
        with torch.no_grad():
            x0 = codec.encode(video_to_pixels(torch.from_numpy(videos)))
            contexts = [enc.encode(captions), enc.encode(captions[1:] + captions[:1]), enc.encode([""] * num)]
            gen = torch.Generator().manual_seed(1)
            noise = torch.randn(x0.shape, generator=gen)
            for sigma in (0.3, 0.6, 0.9):
                s = torch.full((num,), sigma)
                x_t = add_noise(x0, noise, s)
                losses = [flow_matching_loss(model(x_t, sigma_to_timestep(s), c), x0, noise).item() for c in contexts]
                print(f"  {label:15s} sigma {sigma}: " + " / ".join(f"{v:.4f}" for v in losses))
    texts = [f"a {c} circle" for c in COLOURS for _ in range(seeds)]
    noise_seeds = [j for _ in COLOURS for j in range(seeds)]
    videos = generate_videos(model, enc, codec, texts, noise_seeds, parse_plan("50"), cfg, batch=seeds)
    classes = segment(videos)
    print(f'"a <colour> circle", {seeds} noises x 7 colours, 50 steps, CFG {cfg:g}: share of shape pixels per class '
          "(rows: captioned colour)")
    print("  " + " " * 9 + " ".join(f"{c[:7]:>7s}" for c in COLOURS) + "  unassigned")
    hits, blobs = [], []
    for i, name in enumerate(COLOURS):
        c = classes[i * seeds:(i + 1) * seeds]
        counts = np.array([np.sum(c == k) for k in range(1, 8)] + [np.sum(c < 0)], dtype=float)
        print(f"  {name:8s} " + " ".join(f"{v:7.3f}" for v in counts / max(counts.sum(), 1)))
        frames = [analyse(v, default_min_area(TOY.height, TOY.width)).count for v in videos[i * seeds:(i + 1) * seeds]]
        count = np.concatenate(frames)  # (frames, classes): significant blobs
        blobs.append((np.mean(count[:, 1 + i] > 0), np.mean(count[:, 1 + COLOURS.index("green")] > 0),
                      np.mean(count[:, 1:].sum(1) == 0)))
        per_video = np.array([[np.sum(v == k) for k in range(1, 8)] for v in c])
        hits += list(per_video.argmax(1) == i)
    v = videos.astype(np.float32).reshape(len(COLOURS), seeds, -1)
    same_noise = np.abs(v[:, None] - v[None]).mean(-1)[np.triu_indices(len(COLOURS), 1)].mean()
    same_caption = np.abs(v[:, :, None] - v[:, None]).mean(-1)[:, *np.triu_indices(seeds, 1)].mean()
    print(f"  the captioned colour is the video's most frequent shape colour in {np.mean(hits):.3f} of videos "
          f"(chance 1/7 = 0.143); mean |pixel difference|: same noise, other colour word {same_noise:.1f}; "
          f"same caption, other noise {same_caption:.1f}")
    print("  share of frames with a significant blob of the captioned colour / of green / of no colour, per "
          "captioned colour: " + ", ".join(f"{c} {a:.2f}/{g:.2f}/{e:.2f}" for c, (a, g, e) in zip(COLOURS, blobs)))


def check_frames(num: int, checkpoint: str = "", vae: str = "") -> None:
    pipeline, _, cfg = _teacher(checkpoint, vae)
    model, enc, codec = pipeline.model, pipeline.text_encoder, pipeline.codec
    captions = eval_captions(num, 0)
    videos, _ = make_batch(EVAL_STREAM, num, TOY.pixel_frames, TOY.height, TOY.width)
    with torch.no_grad():
        real = codec.encode(video_to_pixels(torch.from_numpy(videos)))
        fake = torch.cat(list(sample_video(model, plan=parse_plan("50"), context=enc.encode(captions),
                                           num_frames=TOY.latent_frames, latent_height=TOY.latent_height,
                                           latent_width=TOY.latent_width, seeds=list(range(num)),
                                           negative_context=enc.encode([""]), cfg_scale=cfg)), dim=2)
        decoded = to_uint8(pixels_to_video(codec.decode(fake.float())))
        shrunk = to_uint8(pixels_to_video(codec.decode(real * 0.9)))  # real latents at the teacher's spread
    area = default_min_area(TOY.height, TOY.width)
    print("empty frames of real latents scaled by 0.9, decoded: "
          f"{np.mean([analyse(v, area).count[:, 1:].sum(1) == 0 for v in shrunk]):.3f}")
    empty = np.mean([analyse(v, area).count[:, 1:].sum(1) == 0 for v in decoded], axis=0)  # (pixel frames,)
    groups = [(0, 0)] + [(1 + 4 * (f - 1), 4 * f) for f in range(1, TOY.latent_frames)]  # pixel frames per latent
    print(f"per latent frame ({num} videos, 50 steps, CFG {cfg:g}): latent std real / teacher; "
          "mean |latent| real / teacher; empty pixel frames of the teacher")
    for f, (a, b) in enumerate(groups):
        r, g = real[:, :, f], fake[:, :, f]
        print(f"  latent frame {f} (pixel {a}-{b}): std {r.std():.3f} / {g.std():.3f}; |x| {r.abs().mean():.3f} / "
              f"{g.abs().mean():.3f}; empty {empty[a:b + 1].mean():.3f}")


def check_persist(num: int, checkpoint: str = "", vae: str = "") -> None:
    pipeline, _, cfg = _teacher(checkpoint, vae)
    specs = [sample_video_spec(EVAL_STREAM, i, TOY.pixel_frames, TOY.height, TOY.width) for i in range(num)]
    captions = eval_captions(num, 0)
    assert captions == [caption(spec) for spec in specs]
    real, _ = make_batch(EVAL_STREAM, num, TOY.pixel_frames, TOY.height, TOY.width)
    rows = {"VAE round trip": vae_round_trip(real, pipeline.codec, batch=8),
            f"teacher, 50 steps, CFG {cfg:g}": generate_videos(pipeline.model, pipeline.text_encoder, pipeline.codec,
                                                               captions, list(range(num)), parse_plan("50"), cfg, 8)}
    area = default_min_area(TOY.height, TOY.width)
    groups = {"size 12-14": lambda sh, n: sh.size <= 14, "size 15-17": lambda sh, n: 15 <= sh.size <= 17,
              "size 18-20": lambda sh, n: sh.size >= 18, **{k: (lambda sh, n, k=k: sh.kind == k) for k in KINDS},
              **{f"{c} shape(s)": (lambda sh, n, c=c: n == c) for c in (1, 2, 3)}}
    print(f"share of frames where a captioned shape has a significant blob of its colour ({num} videos, seed 0); "
          "shapes in brackets")
    for name, videos in rows.items():
        kept = []  # (shape, shapes in the caption, share of frames)
        for video, spec in zip(videos, specs):
            an = analyse(video, area)
            for sh in spec.shapes:
                kept.append((sh, len(spec.shapes), float(np.mean(an.count[:, 1 + COLOURS.index(sh.colour)] > 0))))
        cells = []
        for label, test in groups.items():
            vals = [v for sh, n, v in kept if test(sh, n)]
            cells.append(f"{label} {np.mean(vals):.2f} ({len(vals)})")
        print(f"  {name}: " + ", ".join(cells))


def binding_shares(videos: np.ndarray, named: list[tuple[str, ...]]) -> dict[str, float]:
    """Per frame, which colours show as a significant blob, against the colours each video's caption names.

    named: per video, its caption's colours. Returns the share of frames that show each named colour
    (averaged over named colours), all named colours at once, a colour not named, and the shapes
    (significant blobs) per frame.
    """
    area = default_min_area(videos.shape[2], videos.shape[3])
    each, every, other, shapes = [], [], [], []
    for video, colours in zip(videos, named):
        shown = analyse(video, area).count[:, 1:] > 0  # (frames, colours): a significant blob of that colour
        idx = [COLOURS.index(c) for c in colours]
        rest = [k for k in range(len(COLOURS)) if k not in idx]
        each.append(shown[:, idx].mean())
        every.append(shown[:, idx].all(1).mean())
        other.append(shown[:, rest].any(1).mean())
        shapes.append(shown.sum(1).mean())
    return {"named colour": float(np.mean(each)), "all named at once": float(np.mean(every)),
            "a colour not named": float(np.mean(other)), "colours per frame": float(np.mean(shapes))}


def check_binding(seeds: int, checkpoint: str = "", vae: str = "") -> None:
    pipeline, label, cfg = _teacher(checkpoint, vae)
    groups = {"one shape, 'a C circle'": [(c,) for c in COLOURS], "two shapes, 'a C circle and a D square'":
              list(BINDING_PAIRS)}
    print(f"{label}: per frame, the colours shown as significant blobs ({seeds} noises per caption, 50 steps, "
          f"CFG {cfg:g})")
    for name, colour_sets in groups.items():
        texts = [caption_of(colours) for colours in colour_sets for _ in range(seeds)]
        named = [colours for colours in colour_sets for _ in range(seeds)]
        noise_seeds = [j for _ in colour_sets for j in range(seeds)]
        videos = generate_videos(pipeline.model, pipeline.text_encoder, pipeline.codec, texts, noise_seeds,
                                 parse_plan("50"), cfg, batch=seeds)
        shares = binding_shares(videos, named)
        print(f"  {name} ({len(texts)} videos): " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))


def check_sampler(num: int, checkpoint: str = "", vae: str = "") -> None:
    pipeline, label, cfg = _teacher(checkpoint, vae)
    model, enc, codec = pipeline.model, pipeline.text_encoder, pipeline.codec
    captions = eval_captions(num, 0)
    seeds = eval_noise_seeds(num, 0)  # asd-eval's noises
    renoised = generate_videos(model, enc, codec, captions, seeds, parse_plan("50"), cfg, batch=8)
    shape = (num, model.config.in_channels, TOY.latent_frames, TOY.latent_height, TOY.latent_width)
    noise = draw_noise(shape, [torch.Generator().manual_seed(s) for s in seeds])  # the sampler's first draw
    with torch.no_grad():
        _, x0 = teacher_trajectory(model, noise, enc.encode(captions), enc.encode([""]), cfg, (), 50, DEFAULT_SHIFT)
        ode = to_uint8(pixels_to_video(codec.decode(x0)))
    keys = ("total", "quality", "semantic", "colour", "object_class", "multiple_objects", "empty_frames",
            "sharpness", "flicker", "subject_consistency", "motion_smoothness")
    print(f"{label}, {num} videos of evaluation seed 0, 50 steps at shift 5, CFG {cfg:g}, same starting noise")
    print("  " + " " * 40 + "".join(f"{k[:12]:>13s}" for k in keys))
    for name, videos in (("re-noise (asd-eval's sampler)", renoised), ("Euler ODE (ode_init's trajectories)", ode)):
        scores = evaluate_videos(videos, captions)
        print(f"  {name:40s}" + "".join(f"{scores[k]:13.3f}" for k in keys))


RESTORE_SIGMAS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)  # 0: the VAE round trip, the ceiling


def check_restore(num: int, checkpoint: str = "", vae: str = "") -> None:
    pipeline, label, cfg = _teacher(checkpoint, vae)
    model, enc, codec = pipeline.model, pipeline.text_encoder, pipeline.codec
    real, captions = make_batch(EVAL_STREAM, num, TOY.pixel_frames, TOY.height, TOY.width)
    assert captions == eval_captions(num, 0)
    with torch.no_grad():
        clean = torch.cat([codec.encode(video_to_pixels(torch.from_numpy(real[lo:lo + 8]))) for lo in range(0, num, 8)])
        context, uncond = enc.encode(captions), enc.encode([""])
    seeds = eval_noise_seeds(num, 0)  # asd-eval's noises
    noise = draw_noise(clean.shape, [torch.Generator().manual_seed(s) for s in seeds])
    keys = ("total", "semantic", "colour", "object_class", "multiple_objects", "empty_frames", "sharpness")
    print(f"{label}: {num} real videos of evaluation seed 0 noised to sigma, then the teacher's Euler ODE "
          f"(50-step grid at shift {DEFAULT_SHIFT:g}, CFG {cfg:g})")
    print("  " + " " * 10 + "".join(f"{k[:12]:>13s}" for k in keys))
    for sigma in RESTORE_SIGMAS:
        videos = []
        for lo in range(0, num, 8):
            x = (1 - sigma) * clean[lo:lo + 8] + sigma * noise[lo:lo + 8]
            _, x0 = teacher_trajectory(model, x, context[lo:lo + 8], uncond, cfg, (), 50, DEFAULT_SHIFT,
                                       start=sigma_to_timestep(sigma))
            with torch.no_grad():
                videos.append(to_uint8(pixels_to_video(codec.decode(x0))))
        scores = evaluate_videos(np.concatenate(videos), captions)
        print(f"  sigma {sigma:<4g}" + "".join(f"{scores[k]:13.3f}" for k in keys))


def caption_of(colours: tuple[str, ...]) -> str:
    """'a C circle', 'a C circle and a D square', ...: one shape per colour, kinds in KINDS order."""
    return caption_of_pairs(list(zip(colours, KINDS)))


PROBE_FRAMES = (0, 4, 8)  # latent frames; latent frame j ends at pixel frame 4j


def _around(images: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images sampled bilinearly at each centre + offsets (pixels, (K, 2)): (N, C * K) features."""
    height, width = images.shape[-2:]
    points = centres[:, None, :] + offsets[None]  # (N, K, 2) as (x, y) in pixels
    grid = torch.stack([2 * points[..., 0] / width - 1, 2 * points[..., 1] / height - 1], dim=-1)
    return F.grid_sample(images, grid[:, None], mode="bilinear", padding_mode="border",
                         align_corners=False).flatten(1)


def _kind_features(streams: tuple[int, int], num: int, codec) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per (shape, probed frame) of `num` videos of a stream: each source's features, the kind, the latent frame."""
    videos, _ = make_batch(streams[0], num, TOY.pixel_frames, TOY.height, TOY.width, start=streams[1])
    trip = vae_round_trip(videos, codec, batch=8)
    cells = codec.vae.config.scale_factor_spatial or 8
    lattice = torch.stack(torch.meshgrid(torch.arange(-1, 2.0), torch.arange(-1, 2.0), indexing="xy"), -1)
    fine = torch.stack(torch.meshgrid(torch.arange(-11, 12, 2.0), torch.arange(-11, 12, 2.0), indexing="xy"), -1)
    rows = {"latent cells (3x3 around the centre)": [], "pixel averages over the same cells (3x3)": [],
            "round-trip pixels (24x24)": [], "real pixels (24x24)": []}
    kinds, frames = [], []
    for lo in range(0, num, 8):
        real = torch.from_numpy(videos[lo:lo + 8]).float() / 255.0  # (B, T, H, W, 3)
        with torch.no_grad():
            latents = codec.encode(video_to_pixels(real))  # (B, 16, F, h, w), normalised
        tripped = torch.from_numpy(trip[lo:lo + 8]).float() / 255.0
        for b in range(real.shape[0]):
            spec = sample_video_spec(streams[0], streams[1] + lo + b, TOY.pixel_frames, TOY.height, TOY.width)
            for j in PROBE_FRAMES:
                t = 4 * j
                covered = real[b, max(0, t - 3):t + 1].mean(0)  # the pixel frames latent frame j encodes
                centres = torch.tensor(np.array([trajectory(sh, TOY.pixel_frames, TOY.height, TOY.width)[t]
                                                 for sh in spec.shapes]), dtype=torch.float32)
                frame = real[b, t].permute(2, 0, 1)[None].expand(len(centres), -1, -1, -1)
                latent = latents[b, :, j][None].expand(len(centres), -1, -1, -1)
                on_grid = centres / cells  # the centres in latent cells, where the two grids are read
                rows["latent cells (3x3 around the centre)"].append(_around(latent, on_grid, lattice.reshape(-1, 2)))
                averages = F.avg_pool2d(covered.permute(2, 0, 1)[None], cells).expand(len(centres), -1, -1, -1)
                rows["pixel averages over the same cells (3x3)"].append(_around(averages, on_grid, lattice.reshape(-1, 2)))
                rows["round-trip pixels (24x24)"].append(
                    _around(tripped[b, t].permute(2, 0, 1)[None].expand(len(centres), -1, -1, -1), centres,
                            fine.reshape(-1, 2)))
                rows["real pixels (24x24)"].append(_around(frame, centres, fine.reshape(-1, 2)))
                kinds += [KINDS.index(sh.kind) for sh in spec.shapes]
                frames += [j] * len(spec.shapes)
    return {name: (torch.cat(x).numpy(), np.array(kinds), np.array(frames)) for name, x in rows.items()}


def _probe_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """Held-out kind accuracy of a ridge probe and of a one-hidden-layer MLP (both on standardised features)."""
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6
    x, xt = (train[0] - mean) / std, (test[0] - mean) / std
    onehot = np.eye(len(KINDS))[train[1]]
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(a.T @ a + 1.0 * np.eye(a.shape[1]), a.T @ onehot)
    ridge = float(np.mean((np.c_[xt, np.ones(len(xt))] @ w).argmax(1) == test[1]))
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.GELU(), torch.nn.Linear(128, len(KINDS)))
    optimiser = torch.optim.AdamW(mlp.parameters(), lr=3e-3, weight_decay=1e-2)
    inputs, labels = torch.from_numpy(x).float(), torch.from_numpy(train[1])
    for _ in range(400):
        optimiser.zero_grad()
        F.cross_entropy(mlp(inputs), labels).backward()
        optimiser.step()
    with torch.no_grad():
        mlp_accuracy = float((mlp(torch.from_numpy(xt).float()).argmax(1).numpy() == test[1]).mean())
    return ridge, mlp_accuracy


def check_geometry(vae: str) -> None:
    codec = load_codec(vae or default_file("vae"))
    videos = [render(VideoSpec((ShapeSpec(c, "circle", 16.0, (32.0, 32.0), (1.0, 1.0)),)), frames=TOY.pixel_frames)
              for c in COLOURS]
    videos.append(np.broadcast_to(np.array(BACKGROUND_RGB, dtype=np.uint8), videos[0].shape).copy())
    real, _ = make_batch(EVAL_STREAM, 8, TOY.pixel_frames, TOY.height, TOY.width)
    with torch.no_grad():
        z = codec.encode(video_to_pixels(torch.from_numpy(np.stack(videos))))
        posterior = codec.vae.encode(video_to_pixels(torch.from_numpy(real))).latent_dist
    gap = (z[:-1] - z[-1:]).pow(2).sum(dim=(1, 3, 4)).sqrt()  # (colours, latent frames)
    print(f"{vae or 'the shipped VAE'}: distance of a 16-px circle's latent from a blank video's (normalised units)")
    print("  " + " " * 10 + "".join(f"{c:>9s}" for c in COLOURS))
    print("  frame 0   " + "".join(f"{g:9.1f}" for g in gap[:, 0].tolist()))
    print("  frames 1-8" + "".join(f"{g:9.1f}" for g in gap[:, 1:].mean(1).tolist()))
    ratio = posterior.std.mean(dim=(0, 2, 3, 4)) / torch.tensor(codec.vae.config.latents_std)
    print("posterior std / channel std over clips, per channel: " + " ".join(f"{r:.2f}" for r in ratio.tolist()))


def check_latent(vae: str) -> None:
    codec = load_codec(vae or default_file("vae"))
    train = _kind_features((EVAL_STREAM + 300, 0), 300, codec)
    test = _kind_features((EVAL_STREAM + 301, 0), 150, codec)
    labels = test[next(iter(test))][1]
    print(f"shape kind read from around each shape's centre, held-out accuracy (ridge / MLP); "
          f"{len(train[next(iter(train))][1])} training and {len(labels)} test shapes, "
          f"majority class {np.bincount(labels).max() / len(labels):.3f}")
    subsets = {"latent frame 0": lambda f: f == 0, "latent frames 4, 8": lambda f: f > 0}
    print(f"  {'':42s}" + "".join(f"{name:>22s}" for name in subsets))
    for name in train:
        cells = []
        for keep in subsets.values():
            a, b = keep(train[name][2]), keep(test[name][2])
            ridge, mlp = _probe_accuracy((train[name][0][a], train[name][1][a]), (test[name][0][b], test[name][1][b]))
            cells.append(f"{ridge:.3f} / {mlp:.3f}")
        print(f"  {name:42s}" + "".join(f"{c:>22s}" for c in cells))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("check", choices=("vae", "text", "teacher", "frames", "persist", "binding", "sampler",
                                      "latent", "restore", "geometry"))
    p.add_argument("--num", type=int, default=32, help="videos / clips (vae, teacher, frames, persist, sampler, restore)")
    p.add_argument("--seeds", type=int, default=3, help="noises per colour (teacher) / per caption (binding)")
    p.add_argument("--checkpoint", default="", help="teacher, frames, persist, binding, sampler, restore: a teacher export "
                                                    "(asd-train export; its text encoder beside it) for the shipped one")
    p.add_argument("--vae", default="", help="another VAE file (a run's model.safetensors) than the shipped "
                                             "one: vae, latent and geometry read it, the teacher checks decode by it")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.check == "vae":
        check_vae(args.num, args.vae)
    elif args.check == "text":
        check_text()
    elif args.check == "teacher":
        check_teacher(args.num, args.seeds, args.checkpoint, args.vae)
    elif args.check == "frames":
        check_frames(args.num, args.checkpoint, args.vae)
    elif args.check == "persist":
        check_persist(args.num, args.checkpoint, args.vae)
    elif args.check == "binding":
        check_binding(args.seeds, args.checkpoint, args.vae)
    elif args.check == "sampler":
        check_sampler(args.num, args.checkpoint, args.vae)
    elif args.check == "restore":
        check_restore(args.num, args.checkpoint, args.vae)
    elif args.check == "geometry":
        check_geometry(args.vae)
    else:
        check_latent(args.vae)


if __name__ == "__main__":
    main()
