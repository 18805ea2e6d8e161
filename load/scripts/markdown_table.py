"""A Markdown table with padded columns, as the bench scripts print their results."""


def print_table(header, rows):
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
    print(line(header))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print(line(row))
