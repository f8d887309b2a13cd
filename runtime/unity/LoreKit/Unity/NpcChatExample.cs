// Example component: press T near an NPC to ask it something; the reply streams into a UI Text
// sentence by sentence, and Escape cancels it. Put it on any GameObject and drag a
// LoreKitBehaviour and a UnityEngine.UI.Text into its fields.
using System.Collections.Generic;
using UnityEngine;
using UnityEngine.UI;
using LoreKit;
using LoreKit.Unity;

public sealed class NpcChatExample : MonoBehaviour
{
    public LoreKitBehaviour loreKit;
    public Text subtitle;
    public string npcId = "mara-vell";
    public string playerLine = "Who leads the Ash Guild?";

    string currentTurn;

    void Start()
    {
        loreKit.Client.NpcsListed += (id, npcs) =>
        {
            foreach (NpcInfo npc in npcs) Debug.Log("NPC " + npc.Id + " (" + npc.Name + "): " + npc.Greeting);
        };
        loreKit.onConnected.AddListener(() => loreKit.Client.ListNpcs());
        loreKit.onSentence.AddListener((id, index, text) =>
        {
            if (id != currentTurn) return;
            subtitle.text = index == 0 ? text : subtitle.text + " " + text; // or start speech synthesis here
        });
        loreKit.Client.Done += reply =>
        {
            if (reply.Id != currentTurn) return;
            Debug.Log("Reply (" + reply.FinishReason + ", " + reply.CompletionTokens + " tokens): " + reply.Text);
            currentTurn = null;
        };
        loreKit.onError.AddListener((id, code, message) =>
        {
            if (id == currentTurn) { subtitle.text = "..."; currentTurn = null; }
        });
    }

    void Update()
    {
        if (Input.GetKeyDown(KeyCode.T) && currentTurn == null)
        {
            subtitle.text = "";
            var state = new Dictionary<string, object>
            {
                { "location", gameObject.scene.name },
                { "time", "dusk" },
                { "flags", new Dictionary<string, object> { { "met_before", PlayerPrefs.GetInt("met_" + npcId) == 1 } } },
            };
            currentTurn = loreKit.Say(npcId, playerLine, state);
            PlayerPrefs.SetInt("met_" + npcId, 1);
        }
        if (Input.GetKeyDown(KeyCode.Escape) && currentTurn != null) loreKit.Cancel(currentTurn);
    }
}
