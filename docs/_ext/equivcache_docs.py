# SPDX-License-Identifier: MIT
#
# The parts of meta-equivcache's reference that the code says, rendered by
# Sphinx at each build so that they cannot go stale:
#
#   equivcache-variables   the class's variables: name, default, [doc] flag
#   equivcache-rules       the rules (lib/equivcache/rules.py), in the registry's
#                          order, each rule with the message it gives for an
#                          example configuration and what fix mode sets
#   equivcache-schema      a JSON schema of lib/equivcache/schemas/, as a
#                          table of its top-level fields and the file itself
#
# And the scripts' help as sphinx-argparse renders it, with one change: a
# help paragraph with indented lines (examples, a table of subcommands) is
# shown as written, as --help prints it, not parsed as reStructuredText.

import json
import os
import re
import sys

from docutils import nodes
from docutils.parsers.rst import Directive, directives

DOCS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = os.path.dirname(DOCS)
CLASS = os.path.join(LAYER, "classes", "equivcache.bbclass")
SCHEMAS = os.path.join(LAYER, "lib", "equivcache", "schemas")


def class_variables(path=CLASS):
    """[(name, default or None, doc)] of the EQUIVCACHE_* variables the class documents, in its order."""
    with open(path) as f:
        text = f.read().replace("\\\n", "")
    defaults = dict(re.findall(r'^(EQUIVCACHE_[A-Z_]+) \?= "(.*)"$', text, re.MULTILINE))
    return [(name, defaults.get(name), doc)
            for name, doc in re.findall(r'^(EQUIVCACHE_[A-Z_]+)\[doc\] = "(.*)"$', text, re.MULTILINE)]


def table(headers, rows, widths):
    """A docutils table: rows of node lists (or strings)."""
    tgroup = nodes.tgroup(cols=len(headers))
    for width in widths:
        tgroup += nodes.colspec(colwidth=width)
    head = nodes.thead()
    head += row(headers)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    tgroup += head
    tgroup += body
    result = nodes.table()
    result += tgroup
    return result


def row(cells):
    r = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=str(cell))
        r += entry
    return r


def literal(text):
    p = nodes.paragraph()
    p += nodes.literal(text=text)
    return p


class Variables(Directive):
    def run(self):
        rows = [(literal(name), literal('"%s"' % default) if default is not None else "unset (see its meaning)", doc)
                for name, default, doc in class_variables()]
        return [table(["variable", "default", "meaning"], rows, [25, 12, 63])]


def rule_examples():
    """{rule: (message, fix)} of each rule for its example configuration
    (tests/unit/rule_examples.py, which test_rules keeps complete)."""
    sys.path.insert(0, os.path.join(LAYER, "tests", "unit"))
    try:
        from rule_examples import EXAMPLES
    finally:
        sys.path.pop(0)
    from equivcache.rules import evaluate
    found = {}
    for name, (settings, probes, descriptor, error) in EXAMPLES.items():
        for finding in evaluate(settings, probes, descriptor, error):
            if finding.rule == name:
                found[name] = (str(finding), finding.fixes)
    return found


class Rules(Directive):
    def run(self):
        from equivcache.rules import RULES
        examples = rule_examples()
        result = []
        for rule in RULES:
            section = nodes.section(ids=["rule-" + rule.name])
            section += nodes.title(text=rule.name)
            section += nodes.paragraph(text=rule.summary[0].upper() + rule.summary[1:] + ".")
            message, fix = examples[rule.name]
            section += nodes.paragraph(text="For an example configuration it says:")
            quote = nodes.block_quote()
            quote += nodes.paragraph(text="WARNING: equivcache: " + message)
            section += quote
            fixes = ", ".join('%s = "%s"' % item for item in sorted((fix or {}).items()))
            section += nodes.paragraph(text=("EQUIVCACHE_MODE = \"fix\" sets: " + fixes) if fixes else
                                       "EQUIVCACHE_MODE = \"fix\" changes nothing: the fix is yours to choose.")
            result.append(section)
        return result


class Schema(Directive):
    required_arguments = 1
    option_spec = {"caption": directives.unchanged}

    def run(self):
        path = os.path.join(SCHEMAS, self.arguments[0])
        self.state.document.settings.record_dependencies.add(path)
        with open(path) as f:
            schema = json.load(f)
        required = set(schema.get("required", []))
        rows = []
        for name, prop in schema.get("properties", {}).items():
            kind = prop.get("type") or ("one of " + ", ".join(json.dumps(v) for v in prop["enum"]) if "enum" in prop
                                        else json.dumps(prop.get("const")) if "const" in prop else "object")
            rows.append((literal(name), " or ".join(kind) if isinstance(kind, list) else kind,
                         "yes" if name in required else "no", prop.get("description", "")))
        out = [nodes.paragraph(text=schema.get("title", "") + (": " if schema.get("title") else "") +
                               schema.get("description", ""))]
        out.append(table(["field", "type", "required", "meaning"], rows, [20, 15, 10, 55]))
        block = nodes.literal_block(text=json.dumps(schema, indent=1), language="json")
        out.append(nodes.paragraph(text="The schema, lib/equivcache/schemas/%s:" % self.arguments[0]))
        out.append(block)
        return out


def help_nodes(text):
    """Help text as nodes: plain paragraphs, and those with indented lines as literal blocks."""
    result = []
    for paragraph in str(text).strip("\n").split("\n\n"):
        if not paragraph.strip():
            continue
        if any(line.startswith(" ") for line in paragraph.splitlines()):
            result.append(nodes.literal_block(text=paragraph))
        else:
            result.append(nodes.paragraph(text=" ".join(paragraph.split())))
    return result


def use_help_nodes():
    import sphinxarg.ext

    def render_list(items, markdown_help, settings=None):
        out = []
        for item in items:
            out += help_nodes(item) if isinstance(item, str) else list(item)
        return out

    def nested_parse_paragraph(self, text):
        container = nodes.container()
        container += help_nodes(text)
        return container
    sphinxarg.ext.render_list = render_list
    sphinxarg.ext.ArgParseDirective._nested_parse_paragraph = nested_parse_paragraph


def setup(app):
    use_help_nodes()
    app.add_directive("equivcache-variables", Variables)
    app.add_directive("equivcache-rules", Rules)
    app.add_directive("equivcache-schema", Schema)
    return {"version": "1", "parallel_read_safe": True}
