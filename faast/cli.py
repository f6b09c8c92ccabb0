"""The `faast` command: serve a model repository, build a kernel folder into one, train a kernel."""

import argparse
import asyncio
import logging
import signal
import sys

log = logging.getLogger("faast")


async def _serve(args):
    from .dataplane import DataPlane
    from .grpc_server import create_server
    from .handlers import Handlers, RepositoryHandlers, TraceHandlers
    from .http_server import HttpFrontend, start_http
    from .metrics import registry_for
    from .repository import ModelRepository
    from .shared_memory import SharedMemoryManager
    from .trace_log import LogSettings, TraceSettings, parse_trace_config

    trace = TraceSettings(parse_trace_config(args.trace_config))
    repository = ModelRepository(args.model_repository, args.model_control_mode, args.load_model)
    await repository.start()
    shared_memory = SharedMemoryManager()
    dataplane = DataPlane(repository, shared_memory, trace, strict_readiness=args.strict_readiness)
    handlers = Handlers(
        RepositoryHandlers(repository), shared_memory, TraceHandlers(trace, repository), LogSettings(args.log_verbose)
    )
    grpc_server, runners = None, []
    if args.allow_grpc:
        address = f"{args.host}:{args.grpc_port}"
        grpc_server = create_server(dataplane, handlers, address)
        await grpc_server.start()
        log.info("Started GRPCInferenceService at %s", address)
    frontend = HttpFrontend(dataplane, handlers, registry_for(repository))
    if args.allow_http:
        runners.append(await start_http(frontend.application(), args.host, args.http_port))
        log.info("Started HTTPService at %s:%d", args.host, args.http_port)
    if args.allow_metrics:
        runners.append(
            await start_http(frontend.application(with_metrics=True, with_api=False), args.host, args.metrics_port)
        )
        log.info("Started Metrics Service at %s:%d", args.host, args.metrics_port)
    dataplane.ready = True
    polling = None
    if args.model_control_mode == "poll":
        polling = asyncio.ensure_future(repository.poll_forever(args.repository_poll_secs))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %s s)", args.exit_timeout_secs)
    dataplane.ready = False
    if polling:
        polling.cancel()
    if grpc_server:
        await grpc_server.stop(grace=args.exit_timeout_secs)
    for runner in runners:
        await runner.cleanup()
    await repository.close()
    shared_memory.unregister()
    if trace.writer:
        trace.writer.flush()


def serve(args):
    asyncio.run(_serve(args))


def build(args):
    from faast.kernels.build import build as build_kernel

    build_kernel(args.kernel, args.out, target=args.target, variant=args.variant)


def train(args):
    from faast.kernels.train import train as train_kernel

    train_kernel(args.kernel, epochs=args.epochs, samples=args.samples)


def validate(args):
    from faast.kernels.validate import validate as validate_kernel

    sys.exit(validate_kernel(args.kernel, data=args.data, url=args.url, out=args.out))


def bench(args):
    from .loadgen import run

    run(args)


def plan(args):
    from .plan import run

    run(args)


def _boolean(text):
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not '{text}'")


def _trace_option(text):
    from .trace_log import parse_trace_config

    try:
        parse_trace_config([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parser():
    from .repository import MODES

    top = argparse.ArgumentParser(prog="faast", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    p = commands.add_parser("serve", help="serve a Triton model repository over Triton's gRPC and HTTP protocols")
    p.add_argument("--model-repository", required=True)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--allow-grpc", type=_boolean, default=True)
    p.add_argument("--allow-http", type=_boolean, default=True)
    p.add_argument("--allow-metrics", type=_boolean, default=True)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on")
    p.add_argument("--model-control-mode", choices=MODES, default="none")
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        help="with explicit control: a model to load at startup (repeatable; * for all)",
    )
    p.add_argument("--repository-poll-secs", type=float, default=15.0)
    p.add_argument(
        "--strict-readiness",
        type=_boolean,
        default=True,
        help="ServerReady only while every model is ready (default true)",
    )
    p.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        help="on SIGTERM, how long in-flight requests may take to finish",
    )
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument(
        "--trace-config",
        action="append",
        default=[],
        type=_trace_option,
        metavar="[triton,]KEY=VALUE",
        help="request tracing, as tritonserver takes it: file=PATH (only settable here), level=TIMESTAMPS, "
        "rate=N, count=N, log-frequency=N (repeatable)",
    )
    p.set_defaults(run=serve)

    p = commands.add_parser("build", help="convert a kernel folder with hls4ml into a model-repository entry")
    p.add_argument("kernel", help="kernel folder, e.g. kernels/facile")
    p.add_argument("--out", required=True, help="model repository to write into")
    p.add_argument(
        "--target",
        default="csim",
        choices=["csim", "u250", "aws-f1"],
        help="board the Vitis project defaults to; u250/aws-f1 serve with device auto",
    )
    p.add_argument("--variant", help="build kernel.toml's [variants.NAME] (e.g. resnet50's full)")
    p.set_defaults(run=build)

    p = commands.add_parser("train", help="quantization-aware training of a kernel folder's model")
    p.add_argument("kernel")
    p.add_argument("--epochs", type=int, help="override kernel.toml [training] epochs")
    p.add_argument("--samples", type=int, help="override kernel.toml [training] samples")
    p.set_defaults(run=train)
    p = commands.add_parser("validate", help="compare float, QKeras, C simulation (and a server) with a verdict")
    p.add_argument("kernel")
    p.add_argument("--data", help=".npz with arrays x (inputs) and y (truth); default: the kernel's generator")
    p.add_argument("--url", help="also compare a running faast at HOST:PORT (gRPC) with the C simulation")
    p.add_argument("--out", default="validation", help="report folder")
    p.set_defaults(run=validate)

    p = commands.add_parser("bench", help="load generator for any Triton-protocol server (gRPC)")
    p.add_argument("url", help="HOST:PORT of the gRPC endpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    p.add_argument("--processes", type=int, help="client processes (default: one per core)")
    p.add_argument("--shared-memory", action="store_true", help="pass tensors through system shared memory")
    p.add_argument("--quick", action="store_true", help="concurrency up to 4, 2 s per level")
    p.add_argument("--label", help="legend label in the plots")
    p.add_argument("--out", default="bench_out")
    p.set_defaults(run=bench)

    p = commands.add_parser("plan", help="SONIC capacity model: clients per accelerator before saturation")
    p.add_argument("--t-cpu", type=float, required=True, help="s per event on the CPU alone")
    p.add_argument("--p", type=float, required=True, help="fraction of t_cpu that is offloaded")
    p.add_argument("--t-acc", type=float, help="s of accelerator time per event (or measure with --url)")
    p.add_argument("--t-latency", type=float, default=0.0, help="s per event added by transmission and travel")
    p.add_argument("--n-acc", type=int, default=1, help="number of accelerators (servers)")
    p.add_argument("--url", help="measure t_acc from this server's ModelStatistics (gRPC HOST:PORT)")
    p.add_argument("--model", default="facile")
    p.add_argument("--requests-per-event", type=float, default=1.0)
    p.add_argument("--bench", help="faast bench JSON: plot predicted vs measured latency against clients")
    p.add_argument("--out", help="folder for plan.json and plan.png")
    p.set_defaults(run=plan)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    verbose = getattr(args, "log_verbose", 0)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.run(args)


if __name__ == "__main__":
    main()
