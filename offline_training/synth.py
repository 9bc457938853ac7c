"""A synthetic Chinese mini-program mall with known ground truth (`minirec data synth`).

Users get demographics, then 1-3 main interests over top categories drawn from a demographic prior
(so 母婴 really leans to women aged 25-34). The platform sees a noisy copy of those interests; the
merchant knows most users who have shopped. Interactions follow a view → click → favorite/cart →
purchase funnel inside sessions at realistic local times (UTC+8 meal peaks, busier weekends, the 618
campaign day) over 60 days, so models can be trained on the past and judged on the future:

- items' demand moves: ~10% are *rising* (launched partway through, with no events before their
  launch day, then demand growing to a peak) and ~10% *fading* (demand halving every 8-20 days);
  users pick items of a category by that day's demand;
- consumables (drinks, rice, nappies, cat food, fresh food, …) have a per-item repurchase cycle: a
  buyer comes back for the same item about every cycle (with noise, stopping for good with some
  probability at each cycle). Consumables bought in the 90 days before the period start cycles too,
  so repeat buying is steady from day one. Other repeats are dropped: nobody buys an item twice on a
  whim, so durables (phones, appliances) are never rebought.

`ground_truth.parquet` holds each user's interests and `item_truth.parquet` each item's trend,
launch time and cycle. Every draw comes from numpy generators keyed by `seed`, so one seed gives
byte-identical files. Users are made in chunks and appended, so memory stays flat at millions of users.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from offline_training.datafolder import FolderWriter
from recsys.schema import CATEGORY_SEP, LIST_SEP

# top category: (title series words or "", female affinity (male = 1/x), affinity per age band,
#   {subcategory: (brands, product nouns, specs from cheap to dear, variants, median price)})
CATALOG: dict[str, tuple[str, float, tuple[float, ...], dict[str, tuple[str, str, str, str, float]]]] = {
    "数码": ("Pro Note Ultra Air Neo", 0.5, (1.6, 1.4, 1.0, 0.7, 0.5), {
        "手机": ("华为 小米 Apple OPPO vivo 荣耀", "5G手机 拍照手机 游戏手机 折叠屏手机", "8GB+256GB 12GB+256GB 12GB+512GB 16GB+1TB", "雅川青 曜石黑 冰霜银 远峰蓝", 3000),
        "笔记本": ("联想 华为 Apple 小米 戴尔 华硕", "轻薄笔记本 游戏本 平板电脑", "i5/16GB/512GB i7/16GB/1TB i7/32GB/1TB", "深空灰 银色 星光色", 5500),
        "耳机": ("漫步者 索尼 Apple 华为 小米 Bose", "真无线蓝牙耳机 降噪耳机 头戴式耳机", "标准版 Pro版 旗舰版", "白色 黑色 薄荷绿", 400),
        "智能手表": ("华为 Apple 小米 佳明 小天才", "智能手表 运动手环 儿童手表", "42mm 46mm eSIM版", "曜石黑 星光银 流光金", 1200),
        "相机": ("索尼 佳能 尼康 富士 大疆 GoPro", "微单相机 运动相机 手持云台", "单机身 标准套装 畅拍套装", "黑色 银色", 3500)}),
    "家电": ("", 1.0, (0.5, 0.9, 1.3, 1.3, 1.1), {
        "空调": ("格力 美的 海尔 奥克斯 TCL", "变频空调 挂机空调 柜机空调", "1匹 1.5匹 3匹", "一级能效 新一级能效", 3000),
        "冰箱": ("海尔 美的 西门子 容声 卡萨帝", "对开门冰箱 十字四门冰箱 三门冰箱", "300L 450L 520L", "风冷无霜 一级能效", 3500),
        "洗衣机": ("海尔 小天鹅 西门子 美的 松下", "滚筒洗衣机 波轮洗衣机 洗烘一体机", "8公斤 10公斤 12公斤", "银色 白色 一级能效", 2500),
        "厨房电器": ("九阳 苏泊尔 美的 小熊 摩飞", "电饭煲 空气炸锅 破壁机 电热水壶", "1.5L 3L 5L", "家用款 智能预约款 多功能款", 300),
        "个护电器": ("戴森 飞利浦 松下 徕芬 欧乐B", "吹风机 电动牙刷 剃须刀 按摩仪", "基础款 升级款 礼盒款", "白色 玫瑰金 黑色", 350)}),
    "食品": ("", 1.1, (1.3, 1.1, 1.0, 0.9, 0.8), {
        "坚果": ("三只松鼠 良品铺子 百草味 洽洽 沃隆", "每日坚果 夏威夷果 碧根果 开心果", "500g 750g 1kg", "礼盒装 袋装 罐装", 80),
        "零食": ("卫龙 良品铺子 三只松鼠 旺旺 乐事", "辣条 牛肉干 薯片 饼干礼包", "100g 300g 1kg", "家庭装 分享装 量贩装", 40),
        "茶叶": ("竹叶青 八马 大益 小罐茶 张一元", "明前龙井 铁观音 普洱茶 茉莉花茶", "100g 250g 500g", "礼盒装 罐装 袋装", 200),
        "饮料": ("农夫山泉 元气森林 东方树叶 怡宝 椰树", "气泡水 矿泉水 无糖茶饮 椰子水", "500ml*12 500ml*24 1.5L*12", "整箱装 混合口味", 50),
        "粮油": ("金龙鱼 福临门 鲁花 十月稻田 五得利", "大米 食用油 面粉 杂粮", "2.5kg 5kg 10kg", "家庭装 东北五常 有机", 70)}),
    "生鲜": ("", 1.4, (0.5, 0.8, 1.2, 1.5, 1.7), {
        "水果": ("佳沛 百果园 褚橙 都乐 盒马", "奇异果 车厘子 芒果 橙子", "1kg 2.5kg 5kg", "精选大果 礼盒装 产地直发", 90),
        "海鲜": ("獐子岛 国联 盒马 海买", "大虾 帝王蟹 三文鱼 扇贝", "500g 1kg 2kg", "冷冻 鲜活 礼盒装", 200),
        "肉类": ("恒都 科尔沁 大希地 圣农", "牛排 牛腱子 猪肋排 鸡胸肉", "500g 1kg 2kg", "原切 冷冻 家庭装", 120),
        "蔬菜": ("盒马 首农 叮咚 本来生活", "有机蔬菜 番茄 西兰花 沙拉菜", "500g 1kg 2.5kg", "当日采摘 产地直发", 30)}),
    "美妆": ("", 3.0, (1.6, 1.4, 0.9, 0.6, 0.3), {
        "口红": ("完美日记 花西子 MAC 迪奥 圣罗兰 阿玛尼", "丝绒哑光口红 滋润唇膏 唇釉", "3g 3.5g 双支装", "#999正红 #316豆沙 #888枫叶红", 180),
        "面膜": ("珀莱雅 自然堂 薇诺娜 一叶子 可复美", "补水面膜 修护面膜 清洁泥膜", "5片 10片 20片", "盒装 礼盒装", 120),
        "精华": ("雅诗兰黛 兰蔻 SK-II 欧莱雅 珀莱雅", "小棕瓶精华 抗老精华 美白精华", "30ml 50ml 100ml", "单瓶装 礼盒装", 500),
        "香水": ("迪奥 香奈儿 祖玛珑 气味图书 观夏", "淡香水 香氛 浓香水", "30ml 50ml 100ml", "花香调 木质调 柑橘调", 600),
        "防晒": ("安热沙 理肤泉 薇诺娜 怡思丁 碧柔", "防晒霜 防晒喷雾 隔离防晒乳", "30ml 50ml 100ml", "SPF50+ 清爽型 水润型", 120)}),
    "母婴": ("", 2.0, (0.3, 2.2, 1.2, 0.4, 0.3), {
        "奶粉": ("飞鹤 爱他美 美赞臣 君乐宝 a2", "婴儿配方奶粉 幼儿成长奶粉 羊奶粉", "1段 2段 3段", "800g 800g*6罐", 300),
        "纸尿裤": ("帮宝适 好奇 花王 babycare 大王", "纸尿裤 拉拉裤 婴儿湿巾", "S码 M码 L码 XL码", "超薄透气 箱装", 150),
        "童装": ("巴拉巴拉 安奈儿 戴维贝拉 好孩子", "儿童卫衣 婴儿连体衣 童装套装", "90cm 110cm 130cm", "粉色 蓝色 卡其色", 120),
        "玩具": ("乐高 babycare 可优比 布鲁可 澳贝", "积木 益智玩具 遥控车 毛绒玩具", "基础款 豪华款 礼盒款", "3岁+ 6岁+", 150)}),
    "服饰": ("", 1.8, (1.4, 1.2, 1.0, 0.8, 0.6), {
        "女装": ("优衣库 太平鸟 江南布衣 ZARA UR 欧时力", "连衣裙 针织开衫 羽绒服 阔腿裤", "S M L XL", "黑色 米白色 雾霾蓝 酒红色", 300),
        "男装": ("海澜之家 优衣库 雅戈尔 森马 GXG", "商务衬衫 休闲夹克 羽绒服 直筒牛仔裤", "M L XL XXL", "黑色 藏青色 卡其色", 300),
        "内衣": ("蕉内 Ubras 猫人 南极人 都市丽人", "无痕内衣 纯棉睡衣 保暖内衣", "M L XL", "肤色 黑色 浅粉", 120),
        "箱包": ("新秀丽 小CK 稻草人 外交官", "通勤托特包 双肩包 拉杆箱", "小号 中号 20寸 24寸", "黑色 焦糖色 米白色", 400)}),
    "家居": ("", 1.3, (0.6, 1.0, 1.3, 1.3, 1.1), {
        "床品": ("罗莱 水星家纺 富安娜 全棉时代 网易严选", "四件套 蚕丝被 乳胶枕 记忆棉床垫", "1.5m 1.8m 2.0m", "纯棉 天丝 简约白", 500),
        "收纳": ("宜家 名创优品 天马 禧天龙", "收纳箱 衣柜收纳盒 桌面置物架", "小号 中号 大号", "三件套 透明款", 60),
        "厨具": ("双立人 苏泊尔 爱仕达 膳魔师 象印", "不粘锅 刀具套装 炒锅 保温杯", "单件 三件套 五件套", "钛合金 不锈钢 陶瓷", 300),
        "清洁用品": ("蓝月亮 立白 威露士 滴露 超能", "洗衣液 消毒湿巾 洗洁精 扫地拖把", "1kg 3kg 5kg", "家庭装 补充装 薰衣草香", 50)}),
    "运动": ("", 0.6, (1.4, 1.3, 1.0, 0.7, 0.5), {
        "跑鞋": ("Nike adidas 李宁 安踏 特步 亚瑟士", "跑步鞋 缓震跑鞋 碳板竞速跑鞋", "39码 41码 43码", "黑白 荧光绿 冰川蓝", 600),
        "健身": ("Keep 迪卡侬 李宁 舒华", "瑜伽垫 哑铃 弹力带 健身环", "基础款 加厚款 套装", "紫色 黑色 粉色", 150),
        "户外": ("骆驼 牧高笛 北面 探路者 凯乐石", "帐篷 冲锋衣 登山鞋 露营椅", "单人款 双人款 四人款", "户外绿 卡其色", 500),
        "骑行": ("捷安特 美利达 迪卡侬 喜德盛", "公路自行车 骑行头盔 山地自行车", "入门款 进阶款 专业款", "黑色 白色 红色", 1200)}),
    "医药健康": ("", 1.0, (0.4, 0.6, 1.0, 1.6, 2.4), {
        "保健品": ("汤臣倍健 Swisse 钙尔奇 Blackmores 同仁堂", "鱼油软胶囊 蛋白粉 钙片 益生菌", "60粒 120粒 200粒", "成人款 中老年款 礼盒装", 200),
        "维生素": ("善存 汤臣倍健 Swisse 养生堂", "维生素C 复合维生素 维生素D", "60片 100片 180片", "泡腾片 咀嚼片", 120),
        "感冒药": ("999 以岭 云南白药 修正 仁和", "感冒灵颗粒 板蓝根颗粒 退烧贴", "10袋 20袋 30袋", "家庭装 儿童款", 30),
        "助眠": ("汤臣倍健 Swisse 修正 同仁堂", "褪黑素软糖 睡眠喷雾 蒸汽眼罩", "30粒 60粒 100粒", "薰衣草味 无香型", 90)}),
    "宠物": ("", 1.4, (1.6, 1.3, 0.8, 0.6, 0.5), {
        "猫粮": ("皇家 渴望 网易天成 麦富迪 比瑞吉", "成猫粮 幼猫粮 冻干猫粮", "1.5kg 4kg 10kg", "鸡肉味 三文鱼味", 200),
        "狗粮": ("皇家 冠能 伯纳天纯 麦富迪 比瑞吉", "成犬粮 幼犬粮 小型犬粮", "1.5kg 7.5kg 15kg", "牛肉味 鸡肉味", 220),
        "猫砂": ("小佩 洁客 N1 pidan", "豆腐猫砂 膨润土猫砂 混合猫砂", "2.5kg 6L 10kg", "原味 绿茶味", 60),
        "宠物玩具": ("小佩 pidan 多格漫 hoopet", "逗猫棒 猫抓板 磨牙玩具 宠物窝", "小号 中号 大号", "灰色 粉色 蓝色", 50)}),
}
TOPS: tuple[str, ...] = tuple(CATALOG)
#: Vague needs typed into the search box and the subcategories that answer them.
NEEDS: dict[str, tuple[str, ...]] = {
    "送女朋友": ("美妆/口红", "美妆/香水", "服饰/箱包"), "睡不着": ("医药健康/助眠", "家居/床品"),
    "送爸妈": ("医药健康/保健品", "家电/个护电器"), "开学装备": ("数码/笔记本", "数码/耳机"),
    "办公室零食": ("食品/零食", "食品/坚果"), "周末露营": ("运动/户外",), "宝宝红屁屁": ("母婴/纸尿裤",),
    "夏天防晒": ("美妆/防晒",), "减脂": ("运动/健身", "生鲜/肉类"), "猫咪挑食": ("宠物/猫粮",),
}
TAGS = ("新品", "包邮", "限时折扣", "会员专享", "热卖", "官方旗舰", "七天无理由")
TAG_P = np.array([0.12, 0.55, 0.15, 0.02, 0.0, 0.2, 0.35])  # 会员专享 and 热卖 are also set by rule
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_P = np.array([0.20, 0.32, 0.23, 0.14, 0.11])
OCCUPATIONS = ("学生", "白领", "蓝领", "个体经营", "自由职业", "教师", "医护", "退休")
OCC_GIVEN_AGE = np.array([  # P(occupation | age band): students are young, the retired old
    [.55, .22, .10, .03, .06, .02, .02, 0], [.02, .50, .18, .10, .10, .05, .05, 0],
    [0, .42, .22, .16, .08, .06, .06, 0], [0, .30, .25, .20, .07, .07, .06, .05],
    [0, .06, .10, .10, .04, .04, .03, .63]])
REGIONS = ("华东", "华北", "华南", "华中", "西南", "西北", "东北")
REGION_P = np.array([0.30, 0.17, 0.17, 0.12, 0.11, 0.06, 0.07])
STORES = ("上海南京西路店", "北京三里屯店", "广州天河城店", "武汉江汉路店", "成都春熙路店", "西安小寨店", "沈阳中街店", "线上旗舰店")
CHANNELS = ("platform_search", "share", "offline_qr", "ad", "live_stream")
CHANNEL_P = np.array([0.35, 0.2, 0.15, 0.2, 0.1])
LEVELS = ("none", "silver", "gold", "platinum")
SCOPES, SCOPE_P = ("basic", "location", "interests"), np.array([1.0, 0.7, 0.6])
EVENTS = ("view", "click", "favorite", "cart", "purchase")
PURCHASE = EVENTS.index("purchase")

START_TS = int(dt.datetime(2025, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())
DAY_S = 86400
DAYS = 60
END_TS = START_TS + DAYS * DAY_S  # 2025-07-31 00:00 UTC+8: fixed, so output never depends on "now"
CHUNK_USERS = 50_000
EXPLORE = 0.1          # share of engagements in a uniformly random category
CLICK_P = (0.18, 0.42)  # chance an engagement's view is clicked: outside / inside the user's interests
FAV_P, CART_P, BUY_P = 0.12, 0.22, 0.45  # favorite and cart given click, purchase given cart
QUERY_SHARE = 0.05     # searches per event
EVENTS_PER_ENGAGEMENT = 1.68  # expected events per engagement, repurchases included (measured)

# Trends: items' demand over the period (× their base popularity).
TRENDS = ("steady", "rising", "fading")
TREND_P = np.array([0.8, 0.1, 0.1])
LAUNCH_DAYS = (0.1, 0.6)     # rising items launch within this part of the period (shares of DAYS) …
RAMP_DAYS = (7, 21)          # … then their demand grows linearly to its peak over this many days
PEAK = 3.0                   # demand of a rising item at its peak and of a fading one on day 0
HALF_LIFE_DAYS = (8, 20)     # a fading item's demand halves every so many days

# Repeat purchases.
#: Consumables: median days until a buyer needs the same item again. An item's own cycle spreads
#: around its subcategory's (CYCLE_SPREAD); every other item is bought at most once per user.
CYCLE_DAYS: dict[str, float] = {
    "食品/饮料": 10, "食品/粮油": 30, "食品/零食": 10, "母婴/纸尿裤": 10, "母婴/奶粉": 14,
    "宠物/猫粮": 25, "宠物/狗粮": 25, "宠物/猫砂": 14, "家居/清洁用品": 30, "美妆/面膜": 21,
    "生鲜/水果": 7, "生鲜/海鲜": 14, "生鲜/肉类": 10, "生鲜/蔬菜": 7,
}
CYCLE_SPREAD = 0.2           # sd of log(item cycle / subcategory cycle) …
CYCLE_RANGE = (3.0, 45.0)    # … within these bounds (days)
REBUY_P = 0.8                # chance a consumable's buyer buys it again next cycle (else stops for good)
REBUY_NOISE = 0.15           # sd of log(gap / cycle) between a user's purchases of the same item
WARMUP_DAYS = 90             # the mall was open before START_TS: consumables bought then are rebought in it
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default `str`, built zero-copy from arrow


def _day_weights() -> np.ndarray:
    """Traffic per day: weekends busier, 6/18 (the 618 campaign) much busier."""
    days = [dt.date(2025, 6, 1) + dt.timedelta(d) for d in range(DAYS)]
    w = np.array([1.3 if d.weekday() >= 5 else 1.0 for d in days])
    w[days.index(dt.date(2025, 6, 18))] *= 2.5
    return w / w.sum()


def _slot_weights() -> np.ndarray:
    """Traffic per local half hour: quiet nights, busy evenings, peaks at 11:30-13:00 and 17:30-20:00."""
    hourly = [.35, .2, .1, .06, .06, .1, .3, .6, .8, .9, 1, 1, 1, 1, .9, .9, 1, 1.1, 1.2, 1.3, 1.4, 1.4, 1.1, .7]
    w = np.repeat(hourly, 2)
    w[23:26] *= 2.0
    w[35:40] *= 2.0
    return w / w.sum()


DAY_P, SLOT_P = _day_weights(), _slot_weights()


def _sample_ts(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` Unix timestamps following the daily and weekly traffic pattern."""
    day = rng.choice(DAYS, size=n, p=DAY_P)
    slot = rng.choice(48, size=n, p=SLOT_P)
    return START_TS + day * DAY_S + slot * 1800 + rng.integers(0, 1800, size=n)


def _choice_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of `probs` (rows sum to 1), vectorized."""
    cum = probs.cumsum(axis=1)
    return np.minimum((cum < rng.random((len(probs), 1)) * cum[:, -1:]).sum(axis=1), probs.shape[1] - 1)


def _strings(values: Sequence[str] | pa.Array, idx: np.ndarray) -> pd.Series:
    """A `str` column holding values[idx]; taken in arrow, since millions of Python strings are slow."""
    arr = values if isinstance(values, pa.Array) else pa.array(list(values), type=pa.large_string())
    return pd.Series(arr.take(pa.array(np.asarray(idx, dtype=np.int64))), dtype=_STR)


def _join_lists(idx: np.ndarray, names: Sequence[str]) -> pd.Series:
    """Rows of indices into `names` (-1 = none) joined with `|`, in column order.

    Rows are encoded as integers and only the distinct ones are formatted, so this costs one
    Python join per distinct list, not per row.
    """
    base = len(names) + 1
    code = ((idx.astype(np.int64) + 1) * base ** np.arange(idx.shape[1], dtype=np.int64)).sum(axis=1)
    uniq, inverse = np.unique(code, return_inverse=True)
    texts = []
    for c in uniq.tolist():
        parts = []
        while c:
            c, digit = divmod(c, base)
            if digit:
                parts.append(names[digit - 1])
        texts.append(LIST_SEP.join(parts))
    return _strings(texts, inverse)


class _Sampler:
    """Draws, per (day, group), an item of that group in proportion to its demand on that day.

    `weights` is (DAYS, items); items of a negative group are never drawn. All (day, group) blocks
    live in one sorted key array, so a batch of draws is one searchsorted call: in block
    b = day * groups + group, item j owns (b + F(j-1), b + F(j)], F = cumulative share of the block's
    weight. A block without weight (e.g. a need whose items are not launched yet) draws -1.
    """

    def __init__(self, group: np.ndarray, n_groups: int, weights: np.ndarray) -> None:
        keep = np.flatnonzero(group >= 0)
        self.order = keep[np.argsort(group[keep], kind="stable")]
        self.n_groups = n_groups
        g = group[self.order]
        cum = np.cumsum(weights[:, self.order], axis=1)
        padded = np.concatenate([np.zeros((len(weights), 1)), cum], axis=1)
        start = padded[:, np.searchsorted(g, np.arange(n_groups), side="left")]
        total = padded[:, np.searchsorted(g, np.arange(n_groups), side="right")] - start
        share = np.clip((cum - start[:, g]) / np.where(total > 0, total, 1.0)[:, g], 0.0, 1.0)
        self.keys = (np.arange(len(weights))[:, None] * n_groups + g + share).ravel()
        self.total = total.ravel()

    def __call__(self, rng: np.random.Generator, day: np.ndarray, group: np.ndarray) -> np.ndarray:
        block = day * self.n_groups + group
        q = block + rng.random(len(block)) * (1 - 1e-12)
        if not len(self.order):
            return np.full(len(block), -1, dtype=np.int64)
        by_q = np.argsort(q)  # sorted needles: ~3x faster searchsorted on a large key array (cache)
        pos = np.empty(len(q), dtype=np.int64)
        pos[by_q] = np.minimum(np.searchsorted(self.keys, q[by_q], side="right"), len(self.keys) - 1)
        return np.where(self.total[block] > 0, self.order[pos % len(self.order)], -1)


def _trends(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per item: trend (index into TRENDS), launch day and ramp (rising), half-life in days (fading).

    The first item of each top category stays steady, so every category has demand on every day.
    """
    trend = rng.choice(len(TRENDS), n, p=TREND_P)
    trend[: len(TOPS)] = TRENDS.index("steady")
    rising, fading = trend == TRENDS.index("rising"), trend == TRENDS.index("fading")
    first, last = round(LAUNCH_DAYS[0] * DAYS), round(LAUNCH_DAYS[1] * DAYS)
    return {"trend": trend, "launch": np.where(rising, rng.integers(first, last + 1, n), 0),
            "ramp": np.where(rising, rng.uniform(*RAMP_DAYS, n), 0.0).round(1),
            "half_life": np.where(fading, rng.uniform(*HALF_LIFE_DAYS, n), 0.0).round(1)}


def _demand(pop: np.ndarray, trend: dict[str, np.ndarray]) -> np.ndarray:
    """(DAYS, items) demand: base popularity times the item's trend on each day.

    Rising: nothing before the launch day, then PEAK × (days since launch / ramp), capped at PEAK.
    Fading: PEAK × 2^(-day / half-life). Steady: 1.
    """
    day = np.arange(DAYS, dtype=np.float64)[:, None]
    since = day - trend["launch"] + 1  # 1 on the launch day
    rising = PEAK * np.clip(since / np.maximum(trend["ramp"], 1.0), 0.0, 1.0)
    fading = PEAK * 0.5 ** (day / np.maximum(trend["half_life"], 1.0))
    kind = trend["trend"]
    return pop * np.where(kind == TRENDS.index("rising"), rising,
                          np.where(kind == TRENDS.index("fading"), fading, 1.0))


def _cycles(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """Per item repurchase cycle in days, spread around its subcategory's `base` (0 = bought once).

    Kept within CYCLE_RANGE, so at least one repurchase fits in the period.
    """
    spread = np.exp(rng.normal(0.0, CYCLE_SPREAD, len(base)))
    return np.where(base > 0, np.clip(base * spread, *CYCLE_RANGE), 0.0).round(1)


def _make_items(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The catalog, plus per-item arrays the event generator needs (top, sub, popularity, …)."""
    subs = [(t, s, spec) for t, (_, _, _, sd) in CATALOG.items() for s, spec in sd.items()]
    sub_top = np.array([TOPS.index(t) for t, _, _ in subs])
    # every top category gets an item first, the rest is spread by number of subcategories
    top = np.concatenate([np.arange(len(TOPS)), rng.choice(len(TOPS), n - len(TOPS), p=np.bincount(sub_top) / len(subs))])
    sub_ranges = [np.flatnonzero(sub_top == t) for t in range(len(TOPS))]
    first, count = np.array([r[0] for r in sub_ranges]), np.array([len(r) for r in sub_ranges])
    sub = first[top] + (rng.random(n) * count[top]).astype(np.int64)

    def pick(lists: list[list[str]], group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random word from lists[group] per item: (word as object array, its index in the list)."""
        lengths = np.array([len(x) for x in lists])
        local = (rng.random(len(group)) * lengths[group]).astype(np.int64)
        flat = np.array([w for x in lists for w in x], dtype=object)
        return flat[np.concatenate([[0], np.cumsum(lengths)[:-1]])[group] + local], local

    brands, _ = pick([spec[0].split() for _, _, spec in subs], sub)
    nouns, _ = pick([spec[1].split() for _, _, spec in subs], sub)
    specs, spec_i = pick([spec[2].split() for _, _, spec in subs], sub)
    variants, _ = pick([spec[3].split() for _, _, spec in subs], sub)
    series, _ = pick([CATALOG[t][0].split() or [""] for t in TOPS], top)
    numbered = np.where(series != "", series + " " + rng.integers(5, 70, n).astype(str).astype(object) + " ", "")
    title = brands + " " + numbered + nouns + " " + specs + " " + variants

    median = np.array([spec[4] for _, _, spec in subs])[sub] * 1.25 ** spec_i  # dearer specs cost more
    raw = rng.lognormal(np.log(median), 0.45)
    price = np.where(raw >= 100, np.floor(raw / 100) * 100 + 99, np.floor(raw) + 0.9)  # "x99", "x.9" pricing
    # long tail: Zipf over a random rank inside each top category (items are drawn per category)
    order = np.lexsort((rng.random(n), top))
    rank = np.empty(n)
    rank[order] = np.arange(n) - np.searchsorted(top[order], top[order]) + 1.0
    pop = rank ** -0.8
    trend = _trends(rng, n)
    demand = _demand(pop, trend)
    cycle = _cycles(rng, np.array([CYCLE_DAYS.get(t + CATEGORY_SEP + s, 0.0) for t, s, _ in subs])[sub])
    member_only = (rng.random(n) < 0.05) & (np.arange(n) >= len(TOPS))  # every category has public items
    tags = rng.random((n, len(TAGS))) < TAG_P
    tags[:, TAGS.index("会员专享")] |= member_only
    tags[:, TAGS.index("新品")] |= trend["trend"] == TRENDS.index("rising")
    recent = demand[-7:].mean(axis=0)  # the catalog is a snapshot at END_TS: hot = selling well lately
    tags[:, TAGS.index("热卖")] = recent >= np.quantile(recent, 0.97)
    stock = np.where(rng.random(n) < 0.07, 0, np.floor(rng.lognormal(4, 1, n)) + 1).astype(np.int64)
    frame = pd.DataFrame({
        "item_id": pd.Series([f"i{i:06d}" for i in range(n)], dtype=_STR),
        "title": pd.Series(title, dtype=_STR),
        "category": pd.Series(np.array([t + CATEGORY_SEP + s for t, s, _ in subs], dtype=object)[sub], dtype=_STR),
        "brand": pd.Series(brands, dtype=_STR),
        "tags": _join_lists(np.where(tags, np.arange(len(TAGS)), -1), TAGS),
        "price": price.round(2),
        "stock": stock,
        "visible": rng.random(n) >= 0.02,
        "audience": _strings(["", "member_level:gold|platinum"], member_only.astype(np.int64)),
    })
    info = {"top": top, "sub": sub, "demand": demand, "cycle": cycle, "member_only": member_only, "brand": brands,
            "sub_name": np.array([s for _, s, _ in subs], dtype=object)[sub], **trend}
    return frame, info


class _Mall:
    """What every user chunk needs: per-user activity, item samplers and the query vocabulary."""

    def __init__(self, rng: np.random.Generator, users: int, events: int, items: pd.DataFrame, info: dict) -> None:
        act = rng.lognormal(0.0, 1.0, users) * (rng.random(users) >= 0.12)  # ~12% first-time visitors
        if act.sum() == 0:  # e.g. a single user who happened to be a first-time visitor
            act[0] = 1.0
        self.expected = events * act / act.sum()
        self.pct = np.empty(users)
        self.pct[np.argsort(act, kind="stable")] = (np.arange(users) + 0.5) / users
        self.uid_width = max(6, len(str(users - 1)))
        self.top = info["top"]
        n = len(self.top)
        self.item_ids = pa.array(items["item_id"].tolist() + [""], type=pa.large_string())  # "" = no click
        self.cycle = info["cycle"]
        public = info["demand"] * ~info["member_only"]  # what non-premium users see
        self.everyone = _Sampler(self.top, len(TOPS), info["demand"])
        self.public = _Sampler(self.top, len(TOPS), public)
        brand = info["brand"]
        typed = np.array([b.lower() if b.isascii() else b for b in brand.tolist()], dtype=object)
        forms = np.concatenate([brand, typed, info["sub_name"], brand + info["sub_name"], np.array(list(NEEDS), dtype=object)])
        vocab, codes = np.unique(forms.astype(str), return_inverse=True)
        self.query_vocab = pa.array(vocab.tolist(), type=pa.large_string())
        self.item_queries = codes[: 4 * n].reshape(4, n).T  # brand, brand as typed, subcategory, brand+subcategory
        self.need_codes = codes[4 * n:]
        category = items["category"].to_numpy(dtype=object)
        self.need_items = [_Sampler(np.where(np.isin(category, subs), 0, -1), 1, public) for subs in NEEDS.values()]


def _users(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Demographics, then interests drawn from a demographic prior, then the platform's noisy view."""
    c = len(TOPS)
    age = rng.choice(len(AGE_BANDS), n, p=AGE_P)
    female = rng.random(n) < 0.52
    f_aff = np.array([CATALOG[t][1] for t in TOPS])
    prior = np.where(female[:, None], f_aff, 1 / f_aff) * np.array([CATALOG[t][2] for t in TOPS]).T[age]
    prior /= prior.sum(axis=1, keepdims=True)
    # 1-3 main interests drawn without replacement from the prior (Gumbel top-k), Dirichlet shares
    k = rng.choice([1, 2, 3], n, p=[0.35, 0.45, 0.2])
    top3 = np.argsort(-(np.log(prior) + rng.gumbel(size=(n, c))), axis=1)[:, :3]
    used = np.arange(3) < k[:, None]
    share = rng.gamma(2.0, size=(n, 3)) * used
    rows = np.arange(n)[:, None]
    weights = 0.15 * prior  # a little background interest in everything
    weights[rows, top3] += 0.85 * share / share.sum(axis=1, keepdims=True)
    main = np.zeros((n, c), dtype=bool)
    main[rows, top3] = used
    by_weight = np.take_along_axis(top3, np.argsort(-np.where(used, np.take_along_axis(weights, top3, 1), -1), 1), 1)
    # the platform sees ~80% of true interests plus a few demographic guesses (~78% precision)
    seen = (main & (rng.random((n, c)) < 0.8)) | (~main & (rng.random((n, c)) < 0.6 * prior))
    order = np.argsort(-np.where(seen, weights + 0.3 * rng.random((n, c)), -1.0), axis=1, kind="stable")
    return {
        "age": age, "female": female, "weights": weights, "main": main,
        "occupation": _choice_rows(rng, OCC_GIVEN_AGE[age]),
        "truth": np.where(used, by_weight, -1),
        "platform": np.where(np.take_along_axis(seen, order, 1), order, -1),
        "consent": rng.random((n, len(SCOPES))) < SCOPE_P,
        "city_tier": rng.choice(5, n, p=[0.16, 0.26, 0.24, 0.19, 0.15]) + 1,
        "region": rng.choice(len(REGIONS), n, p=REGION_P),
    }


def _pick_categories(rng: np.random.Generator, weights: np.ndarray, who: np.ndarray) -> np.ndarray:
    """A top category per draw: from the user's interests, or at random (exploration)."""
    c = weights.shape[1]
    keys = (np.arange(len(weights))[:, None] + weights.cumsum(axis=1) / weights.sum(axis=1, keepdims=True)).ravel()
    cat = np.searchsorted(keys, who + rng.random(len(who)) * (1 - 1e-9), side="right") - who * c
    return np.where(rng.random(len(who)) < EXPLORE, rng.integers(0, c, len(who)), np.clip(cat, 0, c - 1))


def _pick_items(rng: np.random.Generator, mall: _Mall, cat: np.ndarray, premium: np.ndarray,
                day: np.ndarray) -> np.ndarray:
    """Items of the given categories by that day's demand; member-only items only for premium members."""
    item = mall.public(rng, day, cat)
    item[premium] = mall.everyone(rng, day[premium], cat[premium])
    return item  # never -1: each category's first item is steady and public (see _trends, _make_items)


def _funnel(rng: np.random.Generator, who: np.ndarray, item: np.ndarray, t0: np.ndarray, match: np.ndarray) -> dict:
    """Expand engagements into view → click → favorite / cart → purchase events, a few seconds apart."""
    m = len(who)
    click = rng.random(m) < np.where(match, CLICK_P[1], CLICK_P[0])  # interest shows in conversion too
    fav, cart = click & (rng.random(m) < FAV_P), click & (rng.random(m) < CART_P)
    buy = cart & (rng.random(m) < BUY_P)
    return _expand(rng, who, item, t0, np.column_stack([np.ones(m, dtype=bool), click, fav, cart, buy]))


def _expand(rng: np.random.Generator, who: np.ndarray, item: np.ndarray, t0: np.ndarray, flags: np.ndarray) -> dict:
    """Events of engagements starting at `t0`, one per funnel step flagged (columns in EVENTS order)."""
    m = len(who)
    t_click = t0 + rng.integers(3, 60, m)
    t_cart = t_click + rng.integers(10, 300, m)
    times = np.column_stack([t0, t_click, t_click + rng.integers(5, 120, m), t_cart, t_cart + rng.integers(30, 900, m)])
    eng, code = np.nonzero(flags)
    value = np.ones(len(code))
    value[code == PURCHASE] = rng.choice([1.0, 2.0, 3.0], int(flags[:, PURCHASE].sum()), p=[0.75, 0.18, 0.07])
    ts = np.minimum(times[eng, code], END_TS - 1)
    return {"who": who[eng], "item": item[eng], "code": code, "ts": ts, "value": value}  # value: quantity bought


def _warmup_purchases(rng: np.random.Generator, mall: _Mall, u: dict[str, np.ndarray], premium: np.ndarray,
                      rate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, ts) of consumables bought in the WARMUP_DAYS before START_TS.

    Users shop then as in the period (`rate` engagements per DAYS). These purchases emit no events
    but start repurchase cycles, so repeat buying is about as common on the period's first days as
    on its last. The funnel is thinned up front: only engagements that could end in a purchase are drawn.
    """
    most = CLICK_P[1] * CART_P * BUY_P
    who = np.repeat(np.arange(len(rate)), rng.poisson(rate * most * WARMUP_DAYS / DAYS))
    item = _pick_items(rng, mall, _pick_categories(rng, u["weights"], who), premium[who], np.zeros(len(who), np.int64))
    p_buy = np.where(u["main"][who, mall.top[item]], CLICK_P[1], CLICK_P[0]) * CART_P * BUY_P
    bought = (rng.random(len(who)) * most < p_buy) & (mall.cycle[item] > 0)
    ts = START_TS - rng.integers(1, WARMUP_DAYS * DAY_S + 1, len(who))
    return who[bought], item[bought], ts[bought]


def _with_repurchases(rng: np.random.Generator, ev: dict, cycle: np.ndarray,
                      before: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    """Keep each user's first purchase of an item only, then add the repurchases of consumables.

    `before` holds purchases made before the period (no events of their own). Nobody buys an item
    twice on a whim, so later organic purchases of it are dropped (their view, click and cart stay).
    A repurchase goes through the same view → click → cart → purchase funnel as a first purchase,
    without drop-off: the buyer came back for it.
    """
    buy = np.flatnonzero(ev["code"] == PURCHASE)
    who, item, ts = (np.concatenate([old, ev[k][buy]]) for old, k in zip(before, ("who", "item", "ts")))
    row = np.concatenate([np.full(len(before[0]), -1), buy])  # -1: before the period
    pair = who.astype(np.int64) * len(cycle) + item
    order = np.lexsort((ts, pair))
    first = np.diff(pair[order], prepend=-1) != 0  # the earliest purchase of each (user, item)
    start = order[first][cycle[item[order[first]]] > 0]
    keep = np.ones(len(ev["code"]), dtype=bool)
    later = row[order[~first]]
    keep[later[later >= 0]] = False
    who, item, t0 = _repurchases(rng, who[start], item[start], ts[start], cycle)
    steps = np.ones((len(who), len(EVENTS)), dtype=bool)
    steps[:, EVENTS.index("favorite")] = False
    again = _expand(rng, who, item, t0, steps)
    return {k: np.concatenate([v[keep], again[k]]) for k, v in ev.items()}


def _repurchases(rng: np.random.Generator, who: np.ndarray, item: np.ndarray, ts: np.ndarray,
                 cycle: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, start time) of the repurchases in the period following purchases at `ts`.

    At every cycle the buyer comes back with probability REBUY_P (else stops for good), on the day
    about one cycle after the previous purchase (log-normal noise REBUY_NOISE), at a usual time of day.
    Repurchases before START_TS continue the cycle but are not returned.
    """
    found = [(who[:0], item[:0], ts[:0])]
    while len(who):
        gap = np.rint(cycle[item] * np.exp(rng.normal(0.0, REBUY_NOISE, len(who)))).astype(np.int64)
        day = (ts - START_TS) // DAY_S + np.maximum(gap, 1)
        back = (day < DAYS) & (rng.random(len(who)) < REBUY_P)
        who, item, day = who[back], item[back], day[back]
        ts = START_TS + day * DAY_S + rng.choice(48, len(day), p=SLOT_P) * 1800 + rng.integers(0, 1800, len(day))
        found.append((who[day >= 0], item[day >= 0], ts[day >= 0]))
    return tuple(np.concatenate([f[k] for f in found]) for k in range(3))  # type: ignore[return-value]


def _by_user_then_time(ev: dict) -> dict:
    """The events sorted by user, then time (stable)."""
    order = np.argsort(ev["who"] * np.int64(1 << 32) + (ev["ts"] - START_TS), kind="stable")
    return {k: v[order] for k, v in ev.items()}


def _chunk(rng: np.random.Generator, lo: int, hi: int, mall: _Mall) -> tuple[dict[str, pd.DataFrame], int]:
    """All tables' rows for users lo..hi-1, and how many of them have events."""
    n = hi - lo
    uids = pa.array([f"u{i:0{mall.uid_width}d}" for i in range(lo, hi)], type=pa.large_string())
    u = _users(rng, n)
    expected = mall.expected[lo:hi]
    n_eng = rng.poisson(expected / EVENTS_PER_ENGAGEMENT)
    # the merchant knows most users who shopped; member level follows activity
    known = (n_eng > 0) & (rng.random(n) < 0.62 + 0.33 * mall.pct[lo:hi])
    level = np.searchsorted([0.55, 0.8, 0.95], mall.pct[lo:hi] + rng.normal(0, 0.12, n))
    channel = rng.choice(len(CHANNELS), n, p=CHANNEL_P)
    store = np.where((channel == CHANNELS.index("offline_qr")) | (rng.random(n) < 0.3), u["region"], len(STORES) - 1)
    premium = known & (level >= 2)

    who = np.repeat(np.arange(n), n_eng)
    n_sess = np.where(n_eng > 0, 1 + rng.binomial(np.maximum(n_eng - 1, 0), 0.3), 0)  # ~3 items per session
    sess_ts = _sample_ts(rng, int(n_sess.sum()))
    sid = (np.cumsum(n_sess) - n_sess)[who] + (rng.random(len(who)) * n_sess[who]).astype(np.int64)
    day = (sess_ts[sid] - START_TS) // DAY_S
    item = _pick_items(rng, mall, _pick_categories(rng, u["weights"], who), premium[who], day)
    ev = _funnel(rng, who, item, sess_ts[sid] + rng.integers(0, 900, len(who)), u["main"][who, mall.top[item]])
    before = _warmup_purchases(rng, mall, u, premium, np.where(n_eng > 0, expected / EVENTS_PER_ENGAGEMENT, 0.0))
    ev = _by_user_then_time(_with_repurchases(rng, ev, mall.cycle, before))

    frames = {
        "interactions": pd.DataFrame({
            "user_id": _strings(uids, ev["who"]), "item_id": _strings(mall.item_ids, ev["item"]),
            "event": _strings(EVENTS, ev["code"]), "ts": ev["ts"], "value": ev["value"]}),
        "queries": _queries(rng, mall, uids, u["weights"], premium, expected),
        "platform_profiles": pd.DataFrame({
            "user_id": _strings(uids, np.arange(n)),
            "consent": _join_lists(np.where(u["consent"], np.arange(len(SCOPES)), -1), SCOPES),
            "age_band": _strings(AGE_BANDS, u["age"]), "gender": _strings(("M", "F"), u["female"].astype(np.int64)),
            "occupation": _strings(OCCUPATIONS, u["occupation"]), "city_tier": u["city_tier"],
            "region": _strings(REGIONS, u["region"]), "interests": _join_lists(u["platform"], TOPS)}),
        "merchant_profiles": pd.DataFrame({
            "user_id": _strings(uids, np.flatnonzero(known)), "member_level": _strings(LEVELS, level[known]),
            "store": _strings(STORES, store[known]), "signup_channel": _strings(CHANNELS, channel[known])}),
        "ground_truth": pd.DataFrame({
            "user_id": _strings(uids, np.arange(n)), "interests": _join_lists(u["truth"], TOPS),
            "expected_events": expected.round(3), **{f"w_{t}": u["weights"][:, j].round(4) for j, t in enumerate(TOPS)}}),
    }
    return frames, int((n_eng > 0).sum())


def _queries(rng: np.random.Generator, mall: _Mall, uids: pa.Array, weights: np.ndarray, premium: np.ndarray,
             expected: np.ndarray) -> pd.DataFrame:
    """Search log: brand / subcategory / brand+subcategory queries for items users want, and vague needs."""
    who = np.repeat(np.arange(len(weights)), rng.poisson(QUERY_SHARE * expected))
    m, no_click = len(who), len(mall.item_ids) - 1
    kind = rng.choice(4, m, p=[0.25, 0.35, 0.3, 0.1])  # brand, subcategory, brand+subcategory, need
    ts = _sample_ts(rng, m)
    day = (ts - START_TS) // DAY_S
    item = _pick_items(rng, mall, _pick_categories(rng, weights, who), premium[who], day)
    form = np.choose(kind.clip(0, 2), [np.where(rng.random(m) < 0.4, 1, 0), np.full(m, 2), np.full(m, 3)])
    code = mall.item_queries[item, form]
    clicked = np.where(rng.random(m) < 0.65, item, no_click)
    need = rng.integers(0, len(NEEDS), m)
    for j, sampler in enumerate(mall.need_items):  # one pass per need, not per query
        rows = np.flatnonzero((kind == 3) & (need == j))
        code[rows] = mall.need_codes[j]
        pick = sampler(rng, day[rows], np.zeros(len(rows), dtype=np.int64))  # -1: nothing on sale yet
        clicked[rows] = np.where((rng.random(len(rows)) < 0.5) & (pick >= 0), pick, no_click)
    order = np.argsort(ts, kind="stable")
    return pd.DataFrame({"user_id": _strings(uids, who[order]), "query": _strings(mall.query_vocab, code[order]),
                         "ts": ts[order], "clicked_item_id": _strings(mall.item_ids, clicked[order])})


def _item_truth(items: pd.DataFrame, info: dict) -> pd.DataFrame:
    """What each item's demand and repurchases really follow (`item_truth.parquet`)."""
    return pd.DataFrame({
        "item_id": items["item_id"], "trend": _strings(TRENDS, info["trend"]),
        "launch_ts": START_TS + info["launch"] * DAY_S,  # START_TS unless rising
        "ramp_days": info["ramp"], "half_life_days": info["half_life"], "cycle_days": info["cycle"]})


def _check_args(users: int, items: int, events: int, seed: int) -> None:
    """Raise ValueError naming the first bad argument."""
    for name, value, low, why in (("users", users, 1, ""), ("items", items, len(TOPS), " (one per top category)"),
                                  ("events", events, 1, ""), ("seed", seed, 0, "")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}{why}, got {value}")


def generate_mall(out: str | Path, *, users: int = 5000, items: int = 2000, events: int = 200_000, seed: int = 0,
                  overwrite: bool = False, progress: bool = True) -> dict:
    """Write a synthetic mall data folder (plus `ground_truth.parquet` and `item_truth.parquet`) to `out`.

    Returns a summary (rows per table, the period's start_ts / end_ts, seconds taken).

    The folder is written atomically: on any error `out` is left as it was. Raises ValueError for
    bad arguments and FileExistsError if `out` is a non-empty folder and `overwrite` is false.
    """
    _check_args(users, items, events, seed)
    started = time.perf_counter()
    item_frame, info = _make_items(np.random.default_rng([seed, 0]), items)
    mall = _Mall(np.random.default_rng([seed, 1]), users, events, item_frame, info)
    counts = {"items": items, "item_truth": items}
    active = 0
    empty: dict[str, pd.DataFrame] = {}
    with FolderWriter(out, overwrite=overwrite) as writer, \
            tqdm(total=users, unit="user", desc="synth", disable=not progress) as bar:
        writer.write("items", item_frame)
        writer.write("item_truth", _item_truth(item_frame, info))
        for chunk, lo in enumerate(range(0, users, CHUNK_USERS)):
            hi = min(users, lo + CHUNK_USERS)
            frames, with_events = _chunk(np.random.default_rng([seed, 2, chunk]), lo, hi, mall)
            active += with_events
            for name, frame in frames.items():
                counts.setdefault(name, 0)
                if len(frame):
                    writer.append(name, frame)
                    counts[name] += len(frame)
                else:
                    empty[name] = frame
            bar.update(hi - lo)
            bar.set_postfix(events=counts["interactions"])
        for name, frame in empty.items():
            if counts[name] == 0:  # a table with no rows still gets its file (with columns)
                writer.write(name, frame)
    return {"out": str(Path(out)), "seed": seed, "users": users, "users_with_events": active, **counts,
            "start_ts": START_TS, "end_ts": END_TS, "seconds": round(time.perf_counter() - started, 2)}
