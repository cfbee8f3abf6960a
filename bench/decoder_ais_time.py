"""Time `vaekit evaluate --ais` parts on a run, on a few test images (the command also runs the family's
full evaluation first): AIS with HMC, IS with the same K on the same images where the model has an
encoder, the BDMC bracket on simulated images, and a GAN's choice of sigma.

    python bench/decoder_ais_time.py RUN [--examples 20] [--bdmc 5] [--steps 1000] [--device cpu]
"""

import argparse
import time
from dataclasses import replace

from vaekit.evaluate import ais_evaluation
from vaekit.results import format_line
from vaekit.runs import load_run, prepare_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--examples", type=int, default=20)
    p.add_argument("--bdmc", type=int, default=5)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    cfg, model = load_run(args.run, args.device)
    cfg = replace(cfg, eval=replace(cfg.eval, decoder_ais_examples=args.examples, bdmc_examples=args.bdmc,
                                    decoder_ais_steps=args.steps, decoder_ais_chains=args.chains))
    data = prepare_data(cfg, next(model.parameters()).device)  # the device load_run resolved ("auto")
    start = time.perf_counter()
    out = ais_evaluation(model, data, cfg, progress=False)
    for name, r in out["results"].items():
        print(format_line(name, r))
    print(f"seconds: {time.perf_counter() - start:.1f} in all; {out['seconds']}")


if __name__ == "__main__":
    main()
