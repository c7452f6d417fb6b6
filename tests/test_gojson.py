from trietcd.gojson import go_string, go_string_list


def test_strings_escape_as_go_encoding_json():
    # Go 1.16 json.Marshal output for the same strings.
    assert go_string('a"b\\c') == '"a\\"b\\\\c"'
    assert go_string("<a href='x'>&</a>") == '"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e"'
    assert go_string("\n\r\t\x00\x08\x0c\x1f") == '"\\n\\r\\t\\u0000\\u0008\\u000c\\u001f"'
    assert go_string("\u2028\u2029") == '"\\u2028\\u2029"'
    assert go_string("é日本\x7f") == '"é日本\x7f"'
    assert go_string("\ud800") == '"\\ufffd"'


def test_string_lists_are_null_when_nil():
    assert go_string_list(None) == "null"
    assert go_string_list([]) == "[]"
    assert go_string_list(["a", "<"]) == '["a","\\u003c"]'
