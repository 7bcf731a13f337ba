"""The official task rule and the schema constants."""

import pytest

from uqa_jax.data import schema


@pytest.mark.parametrize("question,task", [
    ("用户最近3次浏览的商品的标题依次是什么？", "DF"),
    ("用户第5次（从1开始计数）浏览的商品的类目是什么？", "DF"),
    ("用户浏览历史的长度是多少？", "MF"),
    ("类目为X的商品有多少个？", "MF"),
    ("用户下一个可能点击的商品的标题是什么？", "IP"),  # also holds the AP substring: order matters
    ("用户下一个可能点击的商品的品牌是什么？", "AP"),
    ("用户最感兴趣的3个类目是什么？", "LI"),
    ("用户近期最感兴趣的店铺是什么？", "SI"),
    ("用户对品牌偏好的转移路径是什么？", "IT"),
    ("今天天气怎么样？", None),
])
def test_official_rule_assigns_tasks_in_order(question, task):
  assert schema.classify_question(question, "zh") == task


def test_unknown_language_is_an_error():
  with pytest.raises(ValueError, match="expected one of"):
    schema.classify_question("x", "fr")


def test_file_names_are_the_official_ones():
  assert set(schema.ALL_FILES) == {"pretrain_data_train.arrow", "pretrain_data_eval.arrow",
                                   "align_data_train.arrow", "align_data_eval.arrow"}
  assert len(schema.FEATURE_COLUMNS) == 10 and len(set(f.table for f in schema.FEATURES)) == 6
  assert schema.OFFICIAL_VOCAB_SIZES["item"] == 994_447
