"""`faast plan`: how many client processes one faast server feeds before it saturates.

The SONIC latency model of Wang et al. (ProtoDUNE, arXiv:2009.04509), with "GPU" read as the
accelerator:
    t_ideal = (1 - p) * t_CPU + t_acc + t_latency                       (Eq. 2)
    saturated when N_clients / N_acc > t_ideal / t_acc                  (Eq. 3)
    t_SONIC = (1 - p) * t_CPU + t_acc * (1 + max(0, N_clients / N_acc - t_ideal / t_acc)) + t_latency   (Eq. 4)
t_acc is the accelerator time per client event: given, or measured from a live server's
ModelStatistics (compute time per request x requests per event).
"""

import json
from dataclasses import asdict, dataclass


@dataclass
class Plan:
    t_cpu: float  # s, the whole event on the CPU alone
    p: float  # fraction of t_cpu that is offloaded
    t_acc: float  # s of accelerator time per event
    t_latency: float  # s per event: transmission, travel, anything else added by going remote
    n_acc: int = 1

    @property
    def t_ideal(self):
        return (1 - self.p) * self.t_cpu + self.t_acc + self.t_latency

    @property
    def clients_per_accelerator(self):
        """The saturation point: clients one accelerator serves with no added latency (Eq. 3)."""
        return self.t_ideal / self.t_acc

    def t_sonic(self, n_clients):
        excess = max(0.0, n_clients / self.n_acc - self.clients_per_accelerator)
        return (1 - self.p) * self.t_cpu + self.t_acc * (1 + excess) + self.t_latency


def accelerator_seconds_per_event(urls, model, requests_per_event):
    """Mean server compute time per request (input + infer + output) from ModelStatistics, over every
    server in urls (the replicas behind a balancer, each asked directly), times the requests one
    event sends."""
    from .loadgen import replica_statistics

    _, stats = replica_statistics(urls, model)
    if stats["count"] == 0:
        raise ValueError(f"model '{model}' at {', '.join(urls)} has served no request yet: nothing to measure")
    compute_ns = stats["compute_input"] + stats["compute_infer"] + stats["compute_output"]
    return compute_ns / stats["count"] / 1e9 * requests_per_event


def run(args):
    t_acc = args.t_acc
    source = "given"
    replicas = [url for url in (args.replicas or "").split(",") if url]
    n_acc = args.n_acc or len(replicas) or 1
    if replicas and n_acc != len(replicas):
        raise SystemExit(f"--n-acc {n_acc} but --replicas names {len(replicas)} servers")
    if args.url or replicas:
        measured_at = replicas or [args.url]
        t_acc = accelerator_seconds_per_event(measured_at, args.model, args.requests_per_event)
        where = f"{len(replicas)} replicas behind {args.url}" if replicas and args.url else ", ".join(measured_at)
        source = f"measured at {where} ({args.model}, {args.requests_per_event} request(s) per event)"
    if t_acc is None:
        raise SystemExit("give --t-acc, or --url (or --replicas) and --model to measure it")
    plan = Plan(args.t_cpu, args.p, t_acc, args.t_latency, n_acc)
    result = asdict(plan) | {
        "t_acc_source": source,
        "t_ideal": plan.t_ideal,
        "clients_per_accelerator": plan.clients_per_accelerator,
        "clients_before_saturation": int(plan.clients_per_accelerator * plan.n_acc),
    }
    print(f"t_ideal = (1 - {plan.p}) x {plan.t_cpu} s + {plan.t_acc:.4g} s + {plan.t_latency} s = {plan.t_ideal:.4g} s")
    print(f"accelerator time per event: {plan.t_acc:.4g} s ({source})")
    print(
        f"one accelerator feeds {plan.clients_per_accelerator:.1f} client processes before saturating; "
        f"{plan.n_acc} feed {result['clients_before_saturation']}"
    )
    if args.bench:
        result["comparison"] = _compare(plan, args.bench, args.out)
    if args.out:
        from pathlib import Path

        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "plan.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _compare(plan, bench_json, out):
    """Predicted (Eq. 4, with t_CPU = 0: a bench client does nothing but call) vs measured latency."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    from matplotlib import pyplot as plt

    bench = json.loads(Path(bench_json).read_text())
    points = []
    loop = Plan(0.0, 1.0, plan.t_acc, plan.t_latency, plan.n_acc)
    for level in bench["levels"]:
        points.append(
            {
                "clients": level["concurrency"],
                "measured_s": level["latency_ms"]["p50"] / 1000,
                "predicted_s": loop.t_sonic(level["concurrency"]),
            }
        )
    if out:
        clients = [pt["clients"] for pt in points]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(clients, [pt["measured_s"] * 1000 for pt in points], "o-", label="measured (faast bench p50)")
        ax.plot(clients, [pt["predicted_s"] * 1000 for pt in points], "s--", label="SONIC model, Eq. 4")
        ax.set_xlabel("simultaneous clients")
        ax.set_ylabel("latency per request [ms]")
        ax.set_xscale("log", base=2)
        ax.legend()
        fig.tight_layout()
        Path(out).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(out) / "plan.png", dpi=90)
        plt.close(fig)
    return points
