"""WinoGrande-shaped partial scoring: the choices are the two contexts, the target is the rest of the sentence."""


def doc_to_text(doc):
    return {"1": 0, "2": 1}[doc["answer"]]


def doc_to_target(doc):
    blank = doc["sentence"].index("_")
    return doc["sentence"][blank + 1 :].strip()


def doc_to_choice(doc):
    blank = doc["sentence"].index("_")
    return [doc["sentence"][:blank] + option for option in (doc["option1"], doc["option2"])]
