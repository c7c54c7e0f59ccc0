"""``kl-filter list-filters``: every registered filter (built-in and entry-point plugins)."""


def add_parser(sub) -> None:
    p = sub.add_parser("list-filters", help="list registered filters")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import KLFilterError
    from ..filters import get_filter_class, list_filters

    for name in list_filters():
        try:
            cls = get_filter_class(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        except KLFilterError as e:
            doc = f"(unavailable: {e})"
        print(f"{name:36s} {doc}")
    return 0
