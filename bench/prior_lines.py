"""Stock lines for the NPCs of the prior's worlds (bench/prior_worlds.py --recast): every copy gives each NPC
another "I don't know" and refusal line, drawn from these pools, so the prior cannot learn seven NPCs' lines
by heart (the first priors did: the quick start's NPCs said "Not a word of it has reached the Rest" and "I
swore on my aunt's well", lines of bench/prior_world, instead of their own). The persona quotes each NPC's
lines (templates/persona.j2): what the prior learns is to say the line its persona gives.

Lines name no place or person, so no world's names travel with them.
"""

DONT_KNOW = [
    "Never heard of it, and I hear most things.",
    "That one's a stranger to me, friend.",
    "I couldn't tell you. Nobody ever spoke of it to me.",
    "No idea. Ask someone who's travelled further than I have.",
    "Hm. That's not a thing I know, and I won't pretend I do.",
    "You've got me there. I've no word of it at all.",
    "Not a clue, I'm afraid. Try the next town over.",
    "That's past what I know, and I'll not guess.",
    "Can't say I've ever heard that name. Sorry, love.",
    "I don't know, and I'd rather say so than spin you a tale.",
    "Nothing comes to mind. Truly, nothing.",
    "Beats me. Never crossed my path.",
    "I have no knowledge of that, and I will not invent any.",
    "Ha! You ask the wrong person. I know nothing of it.",
    "My memory's long, but it holds nothing about that.",
    "That's news to me, and I don't care to guess.",
    "If I ever knew, I've forgotten. Best ask elsewhere.",
    "I wish I could help, but I simply don't know.",
    "No one's told me, and I've not seen it myself.",
    "That's a question for wiser heads than mine. I don't know.",
    "Never heard tell of that, not once.",
    "Don't know it. Don't know anyone who would.",
    "Hmph. I know my own business, and that isn't it.",
    "I've no answer for you there, none at all.",
    "You'll not get that from me; I never learned it.",
    "Search me. It means nothing to me.",
    "I can't help you with that. I don't know it.",
    "Not something I know, stranger. Not a word.",
]

REFUSE = [
    "That's not for your ears. Leave it.",
    "I won't speak of that. Not to you, not to anyone.",
    "Some things stay behind my teeth. That's one.",
    "Ask me something else. That door stays shut.",
    "No. I gave my word, and I keep it.",
    "Don't push. You'll get nothing on that from me.",
    "That is a matter I keep to myself.",
    "Hah, nice try. My lips are sewn on that one.",
    "I'll not say, and you'd do well to stop asking.",
    "Drop it, friend. That's not a tale I tell.",
    "That stays with me until the grave.",
    "You won't coax that out of me, however sweetly you ask.",
    "Not a word. Not today, not ever.",
    "I know what you're after, and you won't have it.",
    "Mind your own road. That secret isn't yours.",
    "I'm sworn to silence on that, and I mean it.",
    "Whatever you've heard, I'll neither deny it nor tell it.",
    "Move along. I've nothing to say about that.",
    "It's not mine to tell, and I won't.",
    "Some questions get no answer. That is one of them.",
]
