"""Fine-tune and cache the MiniLM classifiers this experiment explains (`models.text_classifiers`).

`python -m experiments.cdt_local_attribution.fine_tune [--task sst2|agnews|all] [--quick]`

Prints the held-out accuracy; a second run finds the cache and only reports it. An interrupted run resumes from its
checkpoint next to the cache file.
"""

import argparse

from models import text_classifiers


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*text_classifiers.TASK_LABELS, "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="the small stand-in (FineTuning.quick())")
    args = parser.parse_args(argv)
    tasks = list(text_classifiers.TASK_LABELS) if args.task == "all" else [args.task]
    config = text_classifiers.FineTuning.quick() if args.quick else None
    report = {}
    for task in tasks:
        _, _, info = text_classifiers.text_classifier(task, config)
        report[task] = info
        print(
            f"{task}: held-out accuracy {info['heldout_accuracy']:.4f} ({info['heldout_split']}); "
            f"{info['trained_blocks']} blocks trained, {info['frozen']} frozen; cached at {info['cache']}"
        )
    return report


if __name__ == "__main__":
    main()
