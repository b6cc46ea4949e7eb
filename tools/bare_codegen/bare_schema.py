"""Parser for the BARE schema subset Keel's schemas use (schemas/*/vN.bare).

Grammar (one declaration per `type`):
    type Name <type-expr>
    type Name struct { field: <type-expr> ... }
    type Name union { A | B | ... }
    type Name enum { X Y ... }
type-expr: a primitive (u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 uint int bool str data void),
    data[N], optional<T>, list<T>, map<K><V>, or a declared type name.
Comments start with '#'. Types may be referenced before they are declared.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Optional, Union

PRIMITIVES = {
    "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64",
    "uint", "int", "bool", "str", "data", "void",
}


class SchemaError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Prim:
    name: str  # one of PRIMITIVES


@dataclasses.dataclass(frozen=True)
class FixedData:
    length: int


@dataclasses.dataclass(frozen=True)
class Optional_:
    inner: "TypeExpr"


@dataclasses.dataclass(frozen=True)
class List_:
    inner: "TypeExpr"


@dataclasses.dataclass(frozen=True)
class Map_:
    key: "TypeExpr"
    value: "TypeExpr"


@dataclasses.dataclass(frozen=True)
class Ref:
    name: str


TypeExpr = Union[Prim, FixedData, Optional_, List_, Map_, Ref]


@dataclasses.dataclass
class Field:
    name: str
    type: TypeExpr


@dataclasses.dataclass
class Decl:
    name: str
    kind: str  # "alias" | "struct" | "union" | "enum" | "void"
    alias: Optional[TypeExpr] = None
    fields: List[Field] = dataclasses.field(default_factory=list)
    members: List[str] = dataclasses.field(default_factory=list)  # union members / enum values


@dataclasses.dataclass
class Schema:
    path: str
    decls: Dict[str, Decl]  # in declaration order

    def get(self, name: str) -> Decl:
        if name not in self.decls:
            raise SchemaError(f"{self.path}: unknown type {name}")
        return self.decls[name]


_TOKEN = re.compile(r"\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*)|(\d+)|(\S))")


def _tokenize(text: str) -> List[str]:
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            break
        pos = m.end()
        if m.group(1):
            continue
        tok = m.group(2) or m.group(3) or m.group(4)
        if tok:
            tokens.append(tok)
    return tokens


class _Parser:
    def __init__(self, path: str, tokens: List[str]):
        self.path = path
        self.t = tokens
        self.i = 0

    def peek(self) -> Optional[str]:
        return self.t[self.i] if self.i < len(self.t) else None

    def next(self) -> str:
        if self.i >= len(self.t):
            raise SchemaError(f"{self.path}: unexpected end of schema")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, want: str) -> None:
        got = self.next()
        if got != want:
            raise SchemaError(f"{self.path}: expected '{want}', got '{got}' (token {self.i})")

    def type_expr(self) -> TypeExpr:
        name = self.next()
        if name == "optional":
            self.expect("<")
            inner = self.type_expr()
            self.expect(">")
            return Optional_(inner)
        if name == "list":
            self.expect("<")
            inner = self.type_expr()
            self.expect(">")
            return List_(inner)
        if name == "map":
            self.expect("<")
            key = self.type_expr()
            self.expect(">")
            self.expect("<")
            value = self.type_expr()
            self.expect(">")
            return Map_(key, value)
        if name == "data" and self.peek() == "[":
            self.next()
            n = self.next()
            if not n.isdigit():
                raise SchemaError(f"{self.path}: data[N] needs a number, got {n}")
            self.expect("]")
            return FixedData(int(n))
        if name in PRIMITIVES:
            return Prim(name)
        if not re.match(r"[A-Za-z_]\w*$", name):
            raise SchemaError(f"{self.path}: bad type name '{name}'")
        return Ref(name)

    def decl(self) -> Decl:
        self.expect("type")
        name = self.next()
        kind = self.peek()
        if kind == "struct":
            self.next()
            self.expect("{")
            fields = []
            while self.peek() != "}":
                fname = self.next()
                self.expect(":")
                fields.append(Field(fname, self.type_expr()))
            self.expect("}")
            names = [f.name for f in fields]
            if len(set(names)) != len(names):
                raise SchemaError(f"{self.path}: duplicate field in {name}")
            return Decl(name, "struct", fields=fields)
        if kind == "union":
            self.next()
            self.expect("{")
            members = []
            if self.peek() == "|":
                self.next()
            while True:
                members.append(self.next())
                if self.peek() == "|":
                    self.next()
                    continue
                break
            self.expect("}")
            if len(set(members)) != len(members):
                raise SchemaError(f"{self.path}: duplicate member in union {name}")
            return Decl(name, "union", members=members)
        if kind == "enum":
            self.next()
            self.expect("{")
            values = []
            while self.peek() != "}":
                values.append(self.next())
            self.expect("}")
            return Decl(name, "enum", members=values)
        expr = self.type_expr()
        if expr == Prim("void"):
            return Decl(name, "void")
        return Decl(name, "alias", alias=expr)


def parse_schema(path: str) -> Schema:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    p = _Parser(path, _tokenize(text))
    decls: Dict[str, Decl] = {}
    while p.peek() is not None:
        d = p.decl()
        if d.name in decls:
            raise SchemaError(f"{path}: type {d.name} declared twice")
        decls[d.name] = d
    schema = Schema(path, decls)
    _check(schema)
    return schema


def refs_of(expr: TypeExpr) -> List[str]:
    if isinstance(expr, Ref):
        return [expr.name]
    if isinstance(expr, (Optional_, List_)):
        return refs_of(expr.inner)
    if isinstance(expr, Map_):
        return refs_of(expr.key) + refs_of(expr.value)
    return []


def decl_refs(d: Decl) -> List[str]:
    if d.kind == "alias":
        return refs_of(d.alias)
    if d.kind == "struct":
        out = []
        for f in d.fields:
            out += refs_of(f.type)
        return out
    if d.kind == "union":
        return list(d.members)
    return []


def _check(schema: Schema) -> None:
    for d in schema.decls.values():
        for r in decl_refs(d):
            if r not in schema.decls:
                raise SchemaError(f"{schema.path}: {d.name} references unknown type {r}")
        if d.kind == "union":
            for m in d.members:
                if schema.decls[m].kind == "enum":
                    raise SchemaError(f"{schema.path}: union {d.name} has enum member {m}")


def topo_order(schema: Schema) -> List[Decl]:
    """Declarations ordered so every type comes after the types it contains by value."""
    order: List[Decl] = []
    state: Dict[str, int] = {}

    def visit(name: str, stack: List[str]) -> None:
        s = state.get(name, 0)
        if s == 2:
            return
        if s == 1:
            raise SchemaError(f"{schema.path}: recursive type {' -> '.join(stack + [name])}")
        state[name] = 1
        for r in decl_refs(schema.decls[name]):
            visit(r, stack + [name])
        state[name] = 2
        order.append(schema.decls[name])

    for name in schema.decls:
        visit(name, [])
    return order
