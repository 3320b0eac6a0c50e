"""Write pairs.xlsx, the Excel example's workbook: `uv run python jobs/examples/make_pairs_xlsx.py`.

As a data team hands one over: a notes sheet first, then the pairs with mobiles stored as
numbers and as text, an empty row, a mobile Excel already turned into scientific notation
(rejected), and a repeated pair (a duplicate).
"""

from pathlib import Path

import xlsxwriter

HERE = Path(__file__).resolve().parent

book = xlsxwriter.Workbook(str(HERE / "pairs.xlsx"))
notes = book.add_worksheet("Read me")
notes.write_string(0, 0, "Partner programs to delink; the pairs are on the next sheet.")
sheet = book.add_worksheet("Pairs")
sheet.write_row(0, 0, ["mobile", "partner_program_name", "requested_by"])
row = 1
for i in range(24):
    mobile = f"9198{i:08d}"
    if i % 2:
        sheet.write_number(row, 0, int(mobile))  # stored as a number, as Excel does by default
    else:
        sheet.write_string(row, 0, mobile)
    sheet.write_string(row, 1, f"partner-0{i % 3 + 1}")
    sheet.write_string(row, 2, "crm-team")
    row += 1
row += 1  # an empty row: skipped, but the rows under it keep the sheet's numbering
sheet.write_string(row, 0, "9.198E+11")  # digits already lost: rejected, never repaired
sheet.write_string(row, 1, "partner-01")
row += 1
sheet.write_number(row, 0, 919800000001)  # the same pair as an earlier row: a duplicate
sheet.write_string(row, 1, "partner-02")
book.close()
