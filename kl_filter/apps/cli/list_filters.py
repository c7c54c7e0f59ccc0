"""``kl-filter list-filters [-v]``: every registered filter (built-in and entry-point plugins); ``-v`` adds each
filter's parameters (flag, type, default, one-line help), read from its ``__init__`` signature."""


def add_parser(sub) -> None:
    p = sub.add_parser("list-filters", help="list registered filters (-v: with their parameters)")
    p.add_argument("-v", "--verbose", dest="params", action="store_true", help="print every filter's parameters")
    p.set_defaults(func=run)


def run(args) -> int:
    from kl_filter.core.errors import KLFilterError
    from kl_filter.filters import get_filter_class, list_filters
    from kl_filter.core.params import describe

    for name in list_filters():
        try:
            cls = get_filter_class(name)
            doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
            params = describe(cls)
        except KLFilterError as e:
            doc, params = f"(unavailable: {e})", []
        print(f"{name:36s} {doc}")
        if args.params:
            for line in params or ["(no parameters)"]:
                print(f"    {line}")
    return 0
