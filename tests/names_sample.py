"""A module whose functions, methods and nested code the name tests trace (its own file: decisions are per module)."""


class It:
    def __next__(self):
        return 1

    @property
    def prop(self):
        return 2

    @staticmethod
    def static():
        return 3

    @classmethod
    def klass(cls):
        return 4

    class Inner:
        def method(self):
            return 5


class Other:
    def __next__(self):
        return 1


def outer():
    def inner():
        return 6

    class Local:
        def method(self):
            return 7

    return inner() + Local().method()


def everything():
    next(It()), next(Other()), It().prop, It.static(), It.klass(), It.Inner().method(), outer()
