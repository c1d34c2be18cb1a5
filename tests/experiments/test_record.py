"""The experiments' result tables."""

from experiments.record import markdown_table


def test_a_table_has_a_column_for_every_key_of_any_row():
    table = markdown_table([{"task": "a", "x": 1.234567}, {"task": "b", "y": 2}]).splitlines()
    assert table[0] == "| task | x | y |"
    assert table[2:] == ["| a | 1.235 |  |", "| b |  | 2 |"]
