r"""A table of raw answers as real models write them, labelled with the group they belong to.

Each question holds what several models might answer to one prompt, in the output styles
of GSM8K (chains of thought ending in ``#### n`` or a sentence), MATH (``\boxed{}``, the
Minerva "Final Answer: The final answer is $x$. I hope it is correct."), MMLU/ARC
(letters in every phrasing), BoolQ-style yes/no with reasons, and free text. Answers with
the same label mean the same thing and must form one group; answers with different labels
must never share a group. ``NEVER_MERGE`` lists further pairs, each grouped on its own,
that must stay apart.

``score`` runs any grouping function (a list of texts -> a list of groups of indices) over
the table: rows grouped correctly (a row is correct when it sits in the group that holds
most rows of its label, and that group holds no other label) and false merges (pairs of
different labels that share a group, and ``NEVER_MERGE`` pairs grouped together).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

GSM_EGGS = (
    "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and uses 4 to bake "
    "muffins, so she has 16 - 3 - 4 = 9 eggs left. She sells each egg for $2, so she makes "
)

QUESTIONS: dict[str, dict[str, list[str]]] = {
    # ---------------------------------------------------------------- GSM8K-style
    "gsm8k eggs": {
        "18": [
            GSM_EGGS + "9 * 2 = $18 every day.\n#### 18",
            GSM_EGGS + "9 x $2 = $18.\n\nSo she makes $18 every day.",
            "Eggs left: 16 - 3 - 4 = 9.\nMoney: 9 * 2 = 18.\n\n**Answer: $18**",
            "Janet makes **$18** every day at the farmers' market.",
            "The answer is $18.00.",
            "18",
            "She sells 9 eggs at $2 each, so she earns $\\boxed{18}$ dollars per day.",
            "Let's compute. 16 - 3 = 13. 13 - 4 = 9. 9 \\times 2 = 18.\n\n"
            "The final answer is: $\\boxed{18}$",
            "She makes eighteen dollars a day.",
            "<think>16 minus 7 is 9, times 2 is 18.</think>\n\nJanet makes $18 per day.",
        ],
        "26": [
            "She has 16 - 3 = 13 eggs to sell. 13 * 2 = 26.\n#### 26",
            "Janet eats 3 eggs, leaving 13. At $2 each she makes 13 * 2 = $26 a day.",
            "The answer is 26.",
            "**Answer:** $26",
        ],
        "14": [
            "16 - 3 - 4 = 9, but she gives 2 away, so 7 eggs. 7 * 2 = 14.\n#### 14",
            "She earns $14 every day.",
            "Final answer: 14 dollars",
        ],
    },
    "gsm8k robe": {
        "3": [
            "A robe takes 2 bolts of blue fiber and half that much white fiber, so "
            "2 / 2 = 1 bolt of white. In total it takes 2 + 1 = 3 bolts.\n#### 3",
            "Blue: 2 bolts. White: 2/2 = 1 bolt. Total = 2 + 1 = **3 bolts**.",
            "It takes 3 bolts in total.",
            "The answer is 3 (2 blue and 1 white).",
            "three",
            "$\\boxed{3}$",
        ],
        "4": [
            "2 bolts of blue plus 2 bolts of white makes 4 bolts.\n#### 4",
            "The robe needs 4 bolts.",
            "Answer: 4",
        ],
        "1": [
            "White fiber is half of 2, which is 1 bolt.\n#### 1",
        ],
    },
    "gsm8k house flip": {
        "70000": [
            "The repairs raise the value by 150%: 80,000 * 1.5 = 120,000, so the house is "
            "worth 80,000 + 120,000 = 200,000. Profit = 200,000 - 80,000 - 50,000 = "
            "70,000.\n#### 70000",
            "He made a profit of $70,000.",
            "The profit is **$70,000**.",
            "Profit: $70 000",
            "70000",
            "The answer is 70,000 dollars.",
            "So Josh's profit was \\$70{,}000. \\boxed{70000}",
        ],
        "120000": [
            "The value increased by 80,000 * 1.5 = 120,000.\n#### 120000",
            "He made $120,000.",
        ],
        "200000": [
            "The house is now worth $200,000, so the answer is 200,000.",
            "#### 200,000",
        ],
    },
    "gsm8k sprints": {
        "540": [
            "James runs 3 sprints 3 times a week, so 9 sprints. Each is 60 meters, so "
            "9 * 60 = 540 meters a week.\n#### 540",
            "He runs 540 meters a week.",
            "3 \u00d7 3 \u00d7 60 = **540 meters**",
            "The answer is 540 m.",
            "Total distance: 540 metres per week.",
            "five hundred forty",
        ],
        "180": [
            "3 sprints of 60 meters is 3 * 60 = 180 meters.\n#### 180",
            "He runs 180 meters each week.",
        ],
    },
    "gsm8k decimal money": {
        "12.5": [
            "Each notebook costs $2.50, and she buys 5: 5 * 2.50 = 12.50.\n#### 12.5",
            "She spends $12.50.",
            "The total is 12.5 dollars.",
            "**$12.50**",
            "The answer is $\\frac{25}{2}$ dollars.",
        ],
        "13": [
            "Rounded to the nearest dollar she spends $13.",
            "#### 13",
        ],
        "10": [
            "5 * 2 = 10, so she spends $10.\n#### 10",
        ],
    },
    "gsm8k negative temperature": {
        "-7": [
            "The temperature drops from 5 degrees by 12 degrees: 5 - 12 = -7.\n#### -7",
            "It is now \u22127 \u00b0C.",
            "The answer is negative 7.",
            "\\boxed{-7}",
            "The temperature is minus seven degrees.",
        ],
        "7": [
            "12 - 5 = 7.\n#### 7",
            "It is 7 degrees.",
        ],
        "17": [
            "5 + 12 = 17, so the answer is 17.",
        ],
    },
    # ---------------------------------------------------------------- numbers
    "number reasons after the answer": {
        "42": [
            "The answer is 42 (6 groups of 7).",
            "The answer is 42, not 48.",
            "42",
            "**42**",
            "forty-two",
            "Forty two.",
            "Final Answer: The final answer is $42$. I hope it is correct.",
            "42.0",
            "6 \u00d7 7 = 42",
            "The product is 42, since 6 groups of 7 make 42.",
        ],
        "48": [
            "The answer is 48, not 42.",
            "48 (6 groups of 8)",
            "forty-eight",
            "\\boxed{48}",
        ],
        "7": [
            "The answer is 7.",
            "There are 7 in each group.",
        ],
    },
    "number fractions": {
        "1/2": [
            "1/2",
            "1 / 2",
            "\\frac12",
            "\\frac{1}{2}",
            "$\\dfrac{1}{2}$",
            "\\boxed{\\tfrac{1}{2}}",
            "0.5",
            "The probability is 0.50.",
            "The answer is one half.",
            "50%",
        ],
        "1/3": [
            "1/3",
            "\\frac{1}{3}",
            "\\boxed{\\dfrac13}",
            "The answer is $\\frac{1}{3}$.",
        ],
        "0.33": [
            "0.33",
            "approximately 0.33",
        ],
        "2": [
            "2",
            "\\frac{4}{2}",
        ],
    },
    "number thousands": {
        "1234": [
            "1 234",
            "1,234",
            "1234",
            "1\u2009234",
            "1\u202f234",
            "1\\,234",
            "The answer is 1{,}234.",
            "$1,234",
            "1234.00",
        ],
        "1243": [
            "1,243",
            "1 243",
        ],
        "234": [
            "234",
        ],
    },
    "number scientific": {
        "1500": [
            "1.5 \\times 10^{3}",
            "1500",
            "1.5e3",
            "1,500",
            "$1.5 \\times 10^3$",
            "1.5 \u00d7 10^3",
            "\\boxed{1.5\\times10^{3}}",
        ],
        "15000": [
            "1.5 \\times 10^{4}",
            "15,000",
        ],
        "0.0015": [
            "1.5 \\times 10^{-3}",
            "0.0015",
        ],
    },
    "number percent": {
        "25%": [
            "25%",
            "25 percent",
            "The discount is 25 %.",
            "\\boxed{25\\%}",
            "The answer is 25 per cent.",
            "0.25",
            "\\frac{1}{4}",
        ],
        "20%": [
            "20%",
            "20 percent",
            "The answer is 20%.",
        ],
        "25": [
            "25",
            "The answer is 25 people.",
        ],
    },
    "number units": {
        "24": [
            "24 m^2",
            "\\boxed{24 \\text{ cm}^2}",
            "The area is 24 square centimeters.",
            "24",
            "Area = 6 \u00d7 4 = 24 cm\u00b2",
            "The answer is $24\\,\\text{cm}^2$.",
        ],
        "20": [
            "20 cm^2",
            "The area is 20 square centimeters.",
        ],
        "48": [
            "\\boxed{48 \\text{ cm}^2}",
        ],
    },
    "number degrees": {
        "90": [
            "90^\\circ",
            "\\boxed{90^{\\circ}}",
            "90\u00b0",
            "The angle is 90 degrees.",
            "90",
        ],
        "45": [
            "45^\\circ",
            "The angle measures 45\u00b0.",
        ],
        "180": [
            "\\boxed{180}",
        ],
    },
    # ---------------------------------------------------------------- MATH-style
    "math pi fractions": {
        "pi/4": [
            "\\boxed{\\frac{\\pi}{4}}",
            "The angle is $\\frac{\\pi}{4}$.",
            "Final Answer: The final answer is $\\frac{\\pi}{4}$. I hope it is correct.",
            "So $\\theta = \\boxed{\\dfrac{\\pi}{4}}$.",
            "\\[\\boxed{\\frac{\\pi}{4}}\\]",
        ],
        "pi/3": [
            "\\frac{\\pi}{3}",
            "\\boxed{\\dfrac{\\pi}{3}}",
            "The answer is $\\frac{\\pi}{3}$.",
        ],
        "pi/2": [
            "\\frac{\\pi}{2}",
            "$\\boxed{\\frac{\\pi}{2}}$",
        ],
    },
    "math lines": {
        "y=3x+5": [
            "y = 3x + 5",
            "$y = 3x + 5$",
            "The equation of the line is $\\boxed{y = 3x + 5}$.",
            "y=3x+5",
            "The answer is $y = 3x+5$.",
        ],
        "y=-x+5": [
            "y = -x + 5",
            "\\boxed{y = -x + 5}",
        ],
        "y=2x+5": [
            "y = 2x + 5",
            "The line is $y=2x+5$.",
            "\\boxed{y = 2x+5}",
        ],
    },
    "math expressions": {
        "x+1": [
            "\\boxed{x+1}",
            "x + 1",
            "The simplified expression is $x+1$.",
            "$\\boxed{x + 1}$",
        ],
        "2x+1": [
            "\\boxed{2x+1}",
            "2x + 1",
        ],
        "x-1": [
            "\\boxed{x-1}",
        ],
        "1": [
            "\\boxed{1}",
        ],
    },
    "math roots": {
        "sqrt2": [
            "\\sqrt{2}",
            "\\boxed{\\sqrt{2}}",
            "The answer is $\\sqrt{2}$.",
            "$\\sqrt2$",
        ],
        "2sqrt2": [
            "2\\sqrt{2}",
            "\\boxed{2\\sqrt{2}}",
        ],
        "2": [
            "\\boxed{2}",
        ],
    },
    "math tuples": {
        "(1,2)": [
            "\\boxed{(1, 2)}",
            "(1,2)",
            "The point is $(1, 2)$.",
            "\\left( 1, 2 \\right)",
        ],
        "(2,1)": [
            "\\boxed{(2, 1)}",
            "(2,1)",
        ],
        "2": [
            "\\boxed{2}",
        ],
    },
    "math intervals": {
        "[2,5)": [
            "\\boxed{[2, 5)}",
            "[2,5)",
            "The solution set is $[2, 5)$.",
        ],
        "(2,5]": [
            "\\boxed{(2, 5]}",
        ],
        "[2,5]": [
            "\\boxed{[2,5]}",
            "[2, 5]",
        ],
        "5": [
            "\\boxed{5}",
        ],
    },
    "math sets": {
        "{1,2,3}": [
            "\\{1, 2, 3\\}",
            "\\boxed{\\{1,2,3\\}}",
            "\\{3, 2, 1\\}",
        ],
        "{1,2}": [
            "\\{1, 2\\}",
        ],
    },
    "math cot chains": {
        "5": [
            "We solve $2x + 3 = 13$. Subtracting 3 gives $2x = 10$, so $x = 5$.\n\n"
            "The answer is $\\boxed{5}$.",
            "Subtract 3 from both sides: 2x = 10. Divide by 2: x = 5.\n\n**Final Answer**\n"
            "\\[\n\\boxed{5}\n\\]",
            "x = 5",
            "$x=5$",
            "The solution is x = 5.",
            "Final Answer: The final answer is $5$. I hope it is correct.",
        ],
        "8": [
            "2x = 13 + 3 = 16, so x = 8.\n\nThe answer is $\\boxed{8}$.",
            "x = 8",
        ],
        "13/2": [
            "2x = 13, x = 13/2.\n\n\\boxed{\\frac{13}{2}}",
            "x = 6.5",
        ],
    },
    # ---------------------------------------------------------------- multiple choice
    "mmlu capital": {
        "C": [
            "I would choose C.",
            "C is correct.",
            "The correct option is C) Paris",
            "The answer is (c).",
            "C",
            "(C)",
            "**C**",
            "Answer: C",
            "The answer is C. Paris is the capital of France.",
            "C) Paris",
            "The correct answer is **C. Paris**",
            "Paris is the capital of France, so the answer is C.",
            "c",
            "\\boxed{C}",
            "Option C is the right one.",
            "The best answer is C.",
        ],
        "B": [
            "The answer is B, not C.",
            "B",
            "I would choose B.",
            "(B) Lyon",
            "Answer: (B)",
        ],
        "A,C": [
            "(A) and (C)",
            "The answers are A and C.",
            "A, C",
        ],
        "A": [
            "A",
            "The correct answer is A.",
        ],
    },
    "arc science": {
        "B": [
            "Plants make food through photosynthesis, which needs sunlight. The answer is B.",
            "**Answer: B**\n\nExplanation: photosynthesis uses light energy.",
            "B. photosynthesis",
            "The correct choice is (B) photosynthesis.",
            "Answer: b",
            "My answer is B.",
            "Let me think. Respiration releases energy, but making food is photosynthesis. "
            "So the answer is (B).",
            "B is the correct answer because plants use light to make glucose.",
        ],
        "D": [
            "D",
            "The answer is D. Plants absorb water through roots.",
            "I'd go with D.",
            "Answer: D) transpiration",
        ],
        "A": [
            "The answer is (A) respiration.",
            "A) respiration",
        ],
    },
    # ---------------------------------------------------------------- yes / no
    "boolq prime": {
        "yes": [
            "Yes, because 17 has no divisors other than 1 and itself.",
            "Yes.",
            "yes",
            "**Yes.** 17 is only divisible by 1 and 17.",
            "True",
            "The answer is yes.",
            "Yes \u2014 17 is prime.",
            "Answer: Yes",
            "YES",
            "Yes, it is.",
        ],
        "no": [
            "No, 17 is not a prime number.",
            "No.",
            "False",
            "**No**, it is not.",
            "The answer is no.",
            "no",
            "No. It has a factor.",
        ],
    },
    "boolq river": {
        "yes": [
            "Yes, the Nile flows through Egypt.",
            "True. The Nile runs through Egypt into the Mediterranean.",
            "Answer: yes",
        ],
        "no": [
            "No, it does not.",
            "false",
            "No",
        ],
        "text: it depends": [
            "It depends on the season.",
        ],
    },
    # ---------------------------------------------------------------- free text
    "free text capital": {
        "paris": [
            "Paris",
            "paris.",
            "**Paris**",
            "The answer is Paris.",
            "Answer: Paris",
            "The capital of France is Paris.",
            "PARIS",
            '"Paris"',
        ],
        "lyon": [
            "Lyon",
            "The answer is Lyon.",
            "The capital of France is Lyon.",
        ],
        "marseille": [
            "Marseille",
        ],
    },
    "free text dates": {
        "march 3": [
            "March 3, 2024",
            "march 3, 2024.",
            "The meeting is on March 3, 2024.",
        ],
        "march 4": [
            "March 4, 2024",
            "The meeting is on March 4, 2024.",
        ],
        "march 13": [
            "March 13, 2024",
        ],
        "2023": [
            "March 3, 2023",
        ],
    },
    "free text days": {
        "monday": [
            "The meeting is on Monday.",
            "the meeting is on monday",
            "The meeting is on Monday!",
        ],
        "sunday": [
            "The meeting is on Sunday.",
        ],
        "tuesday": [
            "The meeting is on Tuesday.",
        ],
    },
    "free text people": {
        "washington": [
            "George Washington",
            "george washington.",
            "The first president was George Washington.",
            "Answer: George Washington",
        ],
        "adams": [
            "John Adams",
            "The answer is John Adams.",
        ],
        "jefferson": [
            "Thomas Jefferson",
        ],
    },
    "free text spelling": {
        "colour": [
            "The colour of the sky is blue",
            "The color of the sky is blue",
            "the colour of the sky is blue.",
        ],
        "grey": [
            "The colour of the sky is grey",
        ],
    },
    "free text sentences": {
        "mitochondria": [
            "The mitochondria is the powerhouse of the cell.",
            "The mitochondria is the powerhouse of the cell",
            "the mitochondria is the powerhouse of the cell!",
        ],
        "nucleus": [
            "The nucleus is the control center of the cell.",
        ],
        "ribosome": [
            "The ribosome is the powerhouse of the cell.",
        ],
    },
    "free text chemistry": {
        "h2o": [
            "H2O",
            "h2o",
            "The chemical formula of water is H2O.",
        ],
        "h2o2": [
            "H2O2",
        ],
        "co2": [
            "CO2",
        ],
    },
    "free text versions": {
        "3.11": [
            "Python 3.11",
            "python 3.11.",
        ],
        "3.12": [
            "Python 3.12",
        ],
        "3.1": [
            "Python 3.1",
        ],
    },
    "free text times": {
        "10:30": [
            "10:30",
            "The train leaves at 10:30.",
        ],
        "10:45": [
            "10:45",
            "The train leaves at 10:45.",
        ],
    },
    "free text long explanations": {
        "rayleigh": [
            "The sky appears blue because of Rayleigh scattering: molecules in the "
            "atmosphere scatter shorter (blue) wavelengths of sunlight much more strongly "
            "than longer (red) wavelengths, so blue light reaches our eyes from all "
            "directions of the sky.",
            "The sky appears blue because of Rayleigh scattering: molecules in the "
            "atmosphere scatter shorter (blue) wavelengths of sunlight much more strongly "
            "than longer (red) wavelengths, so blue light reaches our eyes from all "
            "directions of the sky!",
        ],
        "reflection": [
            "The sky appears blue because it reflects the color of the oceans, which "
            "cover most of the surface of the Earth and send blue light back up into the "
            "atmosphere.",
        ],
    },
}

# Pairs that must never share a group, each grouped on its own (two-answer ensembles).
NEVER_MERGE: list[tuple[str, str]] = [
    ("y = 3x + 5", "y = -x + 5"),
    ("y = 3x + 5", "y = 2x + 5"),
    ("\\boxed{\\frac{\\pi}{4}}", "\\frac{\\pi}{3}"),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{2}"),
    ("\\boxed{x+1}", "\\boxed{1}"),
    ("\\boxed{2x+1}", "\\boxed{x+1}"),
    ("\\boxed{(1, 2)}", "\\boxed{2}"),
    ("\\boxed{(1, 2)}", "\\boxed{(2, 1)}"),
    ("\\boxed{[2, 5)}", "\\boxed{5}"),
    ("\\boxed{[2, 5)}", "\\boxed{[2, 5]}"),
    ("\\boxed{[2, 5)}", "\\boxed{(2, 5]}"),
    ("March 3, 2024", "March 4, 2024"),
    ("2024-03-03", "2024-03-04"),
    ("The meeting is on Monday.", "The meeting is on Sunday."),
    ("The answer is 42 (6 groups of 7).", "7"),
    ("The answer is 42, not 48.", "48"),
    ("The answer is B, not C.", "C"),
    ("(A) and (C)", "A"),
    ("(A) and (C)", "C"),
    ("Yes, because 17 has no divisors other than 1 and itself.", "1"),
    ("Yes, because 17 has no divisors other than 1 and itself.", "No."),
    ("50%", "50"),
    ("25 percent", "25"),
    ("-7", "7"),
    ("negative 7", "7"),
    ("1/3", "0.33"),
    ("\\sqrt{2}", "2"),
    ("2\\sqrt{2}", "\\sqrt{2}"),
    ("x^2", "x^3"),
    ("x^2", "2"),
    ("H2O", "H2O2"),
    ("Python 3.11", "Python 3.1"),
    ("10:30", "10:45"),
    ("1,234", "1,243"),
    ("1.5 \\times 10^{3}", "1.5 \\times 10^{4}"),
    ("GSM: so she makes $18 every day.", "GSM: so she makes $19 every day."),
    ("3 cats and 2 dogs", "2"),
    ("COVID-19", "19"),
    ("The answer is no, 3 times.", "yes"),
    ("Option A", "Option B"),
    ("John Adams", "John Quincy Adams"),
    ("\\boxed{1}", "\\boxed{-1}"),
    ("\\boxed{\\frac{1}{2}}", "\\boxed{2}"),
    (
        "The ribosome is the powerhouse of the cell.",
        "The mitochondria is the powerhouse of the cell.",
    ),
    ("March 3, 2024", "March 3, 2023"),
    ("\\{1, 2, 3\\}", "\\{1, 2\\}"),
    ("1e3", "1e4"),
    ("$18.50", "$18"),
    ("x = 5", "x = -5"),
    ("y = x + 5", "y = x - 5"),
    ("5 apples", "5 oranges and 2 pears"),
]

Grouper = Callable[[Sequence[str]], Sequence[Sequence[int]]]


@dataclass
class Score:
    rows: int = 0
    correct: int = 0
    false_merges: list[str] = field(default_factory=list)
    wrong_rows: list[str] = field(default_factory=list)
    pairs: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows if self.rows else 0.0


def row_count() -> int:
    return sum(len(texts) for groups in QUESTIONS.values() for texts in groups.values())


def score(grouper: Grouper) -> Score:
    """Rows grouped correctly and false merges of ``grouper`` on the whole table."""
    result = Score()
    for question, groups in QUESTIONS.items():
        texts = [text for answers in groups.values() for text in answers]
        labels = [label for label, answers in groups.items() for _ in answers]
        found = grouper(texts)
        assert sorted(i for g in found for i in g) == list(range(len(texts))), question
        group_of = {i: index for index, members in enumerate(found) for i in members}
        for members in found:
            merged = sorted({labels[i] for i in members})
            for a_index, a in enumerate(merged):
                for b in merged[a_index + 1 :]:
                    result.false_merges.append(f"{question}: {a!r} + {b!r}")
        # A label's home is the group holding most of its rows; a row is right when it is
        # in its label's home and the home holds no other label (a row split off costs
        # one row, not every row of its label).
        for label in groups:
            rows = [i for i, row_label in enumerate(labels) if row_label == label]
            counts = Counter(group_of[i] for i in rows)
            home = min(counts, key=lambda g: (-counts[g], g))
            pure = all(labels[i] == label for i in found[home])
            for i in rows:
                result.rows += 1
                if pure and group_of[i] == home:
                    result.correct += 1
                else:
                    result.wrong_rows.append(f"{question} [{label}] {texts[i][-70:]!r}")
    for a, b in NEVER_MERGE:
        result.pairs += 1
        if len(grouper([a, b])) == 1:
            result.false_merges.append(f"never merge: {a!r} + {b!r}")
    return result
