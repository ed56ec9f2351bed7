"""Every prompt text in one place. The DeepResearcher strings are the protocol: the released model was trained on them verbatim."""

from __future__ import annotations

import json
import time
from typing import Any

# Verbatim from the official code (two lines carry a trailing space); {DATE} is UTC "%Y-%m-%d".
DEEPRESEARCHER_SYSTEM = (
    "## Background information \n* Today is {DATE}\n* You are Deep AI Research Assistant\n\n"
    "The question I give you is a complex question that requires a *deep research* to answer.\n\n"
    "I will provide you with two tools to help you answer the question:\n"
    "* A web search tool to help you perform google search. \n"
    "* A webpage browsing tool to help you get new page content.\n\n"
    "You don't have to answer the question now, but you should first think about the research plan or what to search next.\n\n"
    "Your output format should be one of the following two formats:\n\n"
    "<think>\nYOUR THINKING PROCESS\n</think>\n<answer>\nYOUR ANSWER AFTER GETTING ENOUGH INFORMATION\n</answer>\n\n"
    "or\n\n"
    "<think>\nYOUR THINKING PROCESS\n</think>\n<tool_call>\nYOUR TOOL CALL WITH CORRECT FORMAT\n</tool_call>\n\n"
    "You should always follow the above two formats strictly.\n"
    "Only output the final answer (in words, numbers or phrase) inside the <answer></answer> tag, without any "
    "explanations or extra information. If this is a yes-or-no question, you should only answer yes or no."
)

WEB_SEARCH_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": (
            "Search the web for relevant information from google. You should use this tool if the historical "
            "page content is not enough to answer the question. Or last search result is not relevant to the question."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "array",
                    "items": {"type": "string", "description": "The query to search, which helps answer the question"},
                    "description": "The queries to search",
                }
            },
            "required": ["query"],
            "minItems": 1,
            "uniqueItems": True,
        },
    },
}

BROWSE_WEBPAGE_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "browse_webpage",
        "description": (
            "Browse the webpage and return the content that not appeared in the conversation history. You should use "
            "this tool if the last action is search and the search result maybe relevant to the question."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "url_list": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "description": "The chosen url from the search result, do not use url that not appeared in the search result",
                    },
                    "description": "The chosen urls from the search result.",
                }
            },
            "required": ["url_list"],
        },
    },
}

# Qwen2.5's chat template wraps tool schemas this way; models whose template knows no tools get the same text.
QWEN_TOOLS_HEADER = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
QWEN_TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

# Search-R1 (Jin et al., 2025) instruction, prepended to the question in the user turn.
SEARCH_R1_INSTRUCTION = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get new "
    "information. After reasoning, if you find you lack some knowledge, you can call a search engine by <search> query "
    "</search> and it will return the top searched results between <information> and </information>. You can search as "
    "many times as your want. If you find no further external knowledge needed, you can directly provide the answer "
    "inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>. Question: "
)

# Forced last turn when the budget runs out and `on_budget="force_answer"` (not in the paper; off by default).
FORCE_ANSWER = "You have used all your tool calls. Give your final answer now, inside <answer></answer>."


def today_utc() -> str:
    """The date the system prompt states, as the official code computes it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def deepresearcher_system(date: str | None = None) -> str:
    """The system prompt with its date filled in."""
    return DEEPRESEARCHER_SYSTEM.replace("{DATE}", date or today_utc())


def tools_block(tools: list[dict[str, Any]]) -> str:
    """The tool section Qwen2.5's template appends to the system prompt (transformers' tojson is json.dumps)."""
    return QWEN_TOOLS_HEADER + "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools) + QWEN_TOOLS_FOOTER


# The reading agent's EXTRACT_NEW_INFO_PROMPT. REFERENCE-deepresearcher.md §3.6 quotes it abridged; this full
# text matches public copies of the official prompt word for word (its "paing" typo kept), except that the
# <current_sub_question> tag, left unclosed there, is closed here. Placeholders: str.format fields.
READER_PROMPT = """You are a helpful AI research assistant. I will provide you:
* The user's main question. This is a complex question that requires a deep research to answer.
* A sub-question. The main question has been broken down into a set of sub-questions to help you focus on specific aspects of the main question, and this sub-question is the current focus.
* The context so far. This includes all the information that has been gathered from previous turns, including the sub-questions and the information gathered from other resources for them.
* One page of a webpage content as well as the page index. We do paging because the content of a webpage is usually long and we want to provide you with a manageable amount of information at a time. So please mind the page index to know which page you are reading as this could help you infer what could appear in other pages.

Your task is to read the webpage content carefully and extract all *new* information (compared to the context so far) that could help answer either the main question or the sub-question. So you should only gather incremental information from this webpage, but if you find additional details that can complete the previous context, please include them. If you find contradictory information, also include them for further analysis. Provide detailed information including numbers, dates, facts, examples, and explanations when available. Keep the original information as possible, but you can summarize if needed.

In addition to the extracted information, you should also think about whether we need to read more content from this webpage to get more detailed information by paing down to read more content. Also, add a very short summary of the extracted information to help the user understand the new information.


Note that there could be no useful information on the webpage.

Your answer should follow the following format: 
* Put the extracted new information in <extracted_info> tag. If there is no new information, leave the <extracted_info> tag empty. Do your best to get as much information as possible.
* Put "yes" or "no" in <page_down> tag. This will be used for whether to do page down to read more content from the web. For example, if you find the extracted information is from the introduction section in a paper, then you can infer that the extracted information could miss detailed information, next round can further read more content for details in this web page by paging down. If this already the last page, always put "no" in <page_down> tag.
* Put the short summary of the extracted information in <short_summary> tag. Try your best to make it short but also informative as this will present to the user to notify your progress. If there is no useful new information, please also say something like "Didn't find useful information, will read more" in the short summary (be free to use your own words). 

Important note: Use the same language as the user's main question for the short summary. For example, if the main question is using Chinese, then the short summary should also be in Chinese.

<main_question>
{main_question}
</main_question>

<context_so_far>
{context_so_far}
</context_so_far>

<current_sub_question>
{sub_question}
</current_sub_question>

<webpage_content>
    <page_index>{page_index}</page_index>
    <total_page_number>{total_pages}</total_page_number>
    <current_page_content>{page_content}</current_page_content>
</webpage_content>

Now think and extract the incremental information that could help answer the main question or the sub-question."""

# Baselines (paper §4.2 compares prompt-based methods): answer from the model's own knowledge (CoT), or from the
# top search snippets of the question pasted into the prompt (RAG). Same tags as the agent, so the same reward applies.
COT_INSTRUCTION = (
    "Answer the question. First think step by step inside <think> and </think>, then give only the final short "
    "answer inside <answer> and </answer>, without detailed illustrations. For example, <answer> Beijing </answer>."
)
RAG_INSTRUCTION = (
    "Answer the question using the documents below where they help. First think step by step inside <think> and "
    "</think>, then give only the final short answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>."
)

# ---- evaluation and data curation

# The judge prompt of the paper's appendix A.2, verbatim (REFERENCE §6). The official evaluate script's copy
# differs only in layout (the "json format" line twice, ''' fences); we pin the published one because the
# paper's MBE figures are the ones reports compare against, and a prompt the paper prints is citable.
JUDGE_PROMPT = """You will be given a question and its ground truth answer list where each item can be a ground truth answer. Provided a pred_answer, you need to judge if the pred_answer correctly answers the question based on the ground truth answer list.
You should first give your rationale for the judgement, and then give your judgement result (i.e., correct or incorrect).

Here is the criteria for the judgement:
1. The pred_answer doesn't need to be exactly the same as any of the ground truth answers, but should be semantically same for the question.
2. Each item in the ground truth answer list can be viewed as a ground truth answer for the question, and the pred_answer should be semantically same to at least one of them.

question: {question}
ground truth answers: {gt_answer}
pred_answer: {pred_answer}

The output should in the following json format:
```json
{
"rationale": "your rationale for the judgement, as a text",
"judgement": "your judgement result, can only be 'correct' or 'incorrect'"
}
```
Your output:"""

# The paper's low-quality filter prompt (App. A.1). Every sentence is REFERENCE §7's "verbatim core"; the line
# breaks and the three elided value explanations ("if the question is ...") are ours, pinned by the hash.
LOW_QUALITY_PROMPT = (
    "Please identify whether the given question is time-sensitive, subjective, or may cause harmful answers.\n"
    "- Time-sensitive: The answer to the question may change over time.\n"
    "- Harmful: The answer to the question may be harmful or offensive.\n"
    "- Subjective: The answer to the question may be subjective and not based on facts.\n\n"
    "Here is the question: <question>{question}</question>\n\n"
    "Wrap your answer in <answer> tags with one of the following values:\n"
    "- time sensitive: if the question is time-sensitive\n"
    "- harmful: if the question may cause harmful answers\n"
    "- subjective: if the question is subjective\n"
    "- good: if the question is none of the above"
)
# The paper's pass@k prompt (App. A.1), verbatim.
PASS_AT_K_PROMPT = (
    "Give a short answer to the following question. The answer should be in English.\n\nQuestion: {question}\n\nYour answer:"
)
