"""The cells of the printed tables, and the ratios they show."""

UNIT_FORMAT = {"s/epoch": ".3f", "us/call": ".1f", "images/s": ".0f"}


def speedup(seconds, other):
    """How many times faster scratchnet is than `other` (None when it did not run)."""
    return seconds[other] / seconds["scratchnet"] if other in seconds else None


def cell(value, spec, width):
    """value formatted by spec, right-aligned in width ('-' for None)."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def ratio(value):
    return cell(value, ".2f", 7) + ("x" if value is not None else " ")


def percents(fractions, names, digits):
    """'98.12% / - / 97.90%': each name's fraction (- where it has none); '' for None."""
    if not fractions:
        return ""
    return " / ".join("-" if fractions.get(name) is None else f"{100 * fractions[name]:.{digits}f}%"
                      for name in names)


def print_busy_note(share, file):
    """A warning when other processes took a noticeable share of the CPUs."""
    if share is not None and share >= 0.1:
        print(f"note: other processes used {100 * share:.0f}% of the CPUs while this table was "
              f"timed: its numbers are disturbed", file=file)
